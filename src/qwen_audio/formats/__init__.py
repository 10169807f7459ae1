"""The text formats of Qwen-Audio, standard library only: each is defined here once.

- :mod:`.tokens`: the special tokens in the official id order, and the shapes of encoded prompts.
- :mod:`.languages`: the tag languages and the ones written without spaces.
- :mod:`.timestamps`: time tokens, their regexes, timed words.
- :mod:`.spans`: samples → mel frames → conv frames → pooled tokens (an audio's span in the text).
- :mod:`.tags`: the task registry, prompt building and output parsing (paper §3.2).
- :mod:`.chatml`: Qwen-Audio-Chat's ChatML.
- :mod:`.srwt`: word-timestamp targets, references and parsing.

Nothing here imports torch, numpy, transformers or the audio stack, so building a prompt or
parsing an answer costs no heavy import (``tests/test_formats.py`` checks ``sys.modules``).
"""
