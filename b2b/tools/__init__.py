"""The course's tools: the `b2b` command line (`cli`), `bench`, the `showdown` of notebook 08,
the `troubleshooting` table of bad inputs, and `trl_bridge` (the same runs through TRL).
"""
