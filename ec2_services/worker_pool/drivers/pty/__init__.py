"""The PTY driver (``KIRO_DRIVER=pty``): a chat CLI in a pseudo-terminal, driven like a person at the keyboard.

``session.py`` owns the process and the protocol (type, read, answer questions, notice the end); ``screen.py``
decodes the terminal (the line stream, the screen, what the screen means); ``transcript.py`` keeps one turn's answer.
Only ``session.py`` does I/O.
"""
