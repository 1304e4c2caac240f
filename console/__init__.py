"""campaign-console: the Textual operator console and the scriptable CLI."""
