"""polyprompt.__NAME__ — <METHOD> for <field> (paper reference).

Keep this module light: import the field's heavy libraries inside the modules
that need them, so `import polyprompt.__NAME__` is fast.
"""

__version__ = "0.1.0"
