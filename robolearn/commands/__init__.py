"""The jobs behind `robolearn <verb>`, one module per family of verbs; robolearn/cli.py parses and dispatches."""
