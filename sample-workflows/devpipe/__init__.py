"""Step code of the `development_pipeline` sample workflow.

The pipeline turns `sample_project/requirements.md` into a tested, packaged Python library:
`core` holds the real work as plain functions, `steps` adapts them to voltui Python steps
(`devpipe.steps:function`), and `cli` runs the same steps as command steps
(`python -m devpipe.cli STEP`) using the stdin/env contract of command agents.
"""
