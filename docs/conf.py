# Copyright (c) torchgeo-earthsynth contributors.
# Licensed under the MIT License.

"""Sphinx configuration: the user guide (Markdown, MyST) and the API reference (autodoc)."""

from __future__ import annotations

import torchgeo_earthsynth

project = 'torchgeo-earthsynth'
author = 'torchgeo-earthsynth contributors'
copyright = '%Y, torchgeo-earthsynth contributors'  # Sphinx's name
release = torchgeo_earthsynth.__version__
version = release

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
]
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
exclude_patterns = ['_build', 'research']
myst_heading_anchors = 3

# Google-style docstrings (Args:, Returns:, Raises:), as TorchGeo writes them.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_default_options = {'members': True, 'member-order': 'bysource'}
autodoc_typehints = 'description'
autodoc_class_signature = 'separated'

html_theme = 'alabaster'
html_title = f'torchgeo-earthsynth {release}'
