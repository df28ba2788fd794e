"""The guest runtime's Python side: the kernel command-line option table, the kernel config it
needs, and the renderer of /init.
"""
