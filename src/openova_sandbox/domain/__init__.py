"""Pure domain: values, rules and tables.

No framework and no I/O, except reading an override file whose path is handed in.
"""
