#!/usr/bin/env bash
# Debian packages behind the synthetic corpus (TTS, soundfont synthesis), the web-UI browser
# test (chromium) and the official caption scorer (a Java runtime for pycocoevalcap's PTB
# tokenizer). Optional for users:
# tests that need them skip with a reason when they are absent. Idempotent; quiet when present.
set -euo pipefail
PACKAGES=(espeak-ng fluidsynth timgm6mb-soundfont chromium ffmpeg flite festival festvox-italp16k festvox-itapc16k
          festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k
          default-jre-headless)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: missing system packages ${missing[*]} (need root + apt-get); corpus tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
