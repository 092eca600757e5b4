"""The local forge — GitHub's part for ``make run`` and the tests, never in the Lambda zip.

``local``: bare repositories and SQLite pull requests under ``AIPM_LOCAL_FORGE_DIR`` (through ``gitcmd``, real git);
``pages``: its routes (pull request pages and JSON), with ``markdown`` for bodies and comments. ``aipm_local.api``
hands the forge and these routes to the Lambda's app factory (``lambda_fn.app.create_app``).
"""
