"""Sphinx configuration: Markdown pages (MyST) plus the API reference from docstrings."""

project = "streamtap"
author = "streamtap developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
napoleon_google_docstring = True
html_theme = "alabaster"
suppress_warnings = ["myst.xref_missing", "autodoc.import_object"]
nitpicky = False
napoleon_use_ivar = True
