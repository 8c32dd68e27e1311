"""The transformer-cli command line: parses, calls the library, renders. No tensor math here."""
