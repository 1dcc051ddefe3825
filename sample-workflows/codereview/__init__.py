"""Step code of the `code_review` sample workflow.

`steps.generate_module` writes a module from a template, `checker` reviews it (py_compile plus a
few lint rules, as a command step), and `steps.deploy` ships the reviewed module with its report.
"""
