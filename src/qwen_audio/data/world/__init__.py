"""Training data that looks like the world (issue 16 §3): real recorded prompts, open-vocabulary
sentences from packaged text, and several synthesisers reading them.

``asterisk`` (real speech and its binding split), ``texts`` (sentence sources and cleaning),
``voices`` (which voices read which split), ``render`` (espeak-ng and flite), ``build`` (the
command that regenerates everything from a seed).
"""
