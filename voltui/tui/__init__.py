"""The Textual dashboard; `state` is its pure-data core and imports no Textual."""
