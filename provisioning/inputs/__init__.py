"""Reading and checking what the user wrote, at the bottom of the layers (any layer may use it).

- ``userfiles.py``: bounded, safe reads of the files a user names (regular files only, size caps).
- ``yamlfile.py``: strict, safe YAML (duplicate keys, depth and alias limits).
- ``templating.py``: the one bounded Jinja sandbox for templates, healthchecks and userdata.
- ``schema.py``: collecting every problem with its key path; the one did-you-mean matcher.
- ``url.py``: driver URLs (``scheme:rest``), as the user writes them.
- ``records.py``: ``record``, the package's one way to declare a data class (a dataclass
  whose comparison, repr and hash are shared, not compiled per class at import).
"""
