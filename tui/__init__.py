"""HOW a person sees it: the Textual app and the ``sweepdeck`` CLI.

This package's ``__init__`` must stay import-light: the headless CLI lives
here too and must not pay for importing textual.
"""
