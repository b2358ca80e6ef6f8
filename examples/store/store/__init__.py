"""A sample service on backend: ten tables, written and read through every session alias."""
