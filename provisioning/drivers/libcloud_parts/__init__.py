"""Helpers of the ``libcloud:`` driver, one job per module.

``urls`` (parse and canonicalize ``libcloud:PROVIDER[:PLACE]``), ``credentials`` (where keys come
from; never logged), ``errors`` (libcloud's exceptions mapped to ours in one context manager),
``providers`` (what differs between EC2 and the other libcloud providers), ``access`` (key pairs
and security groups), ``userdata`` (Jinja templates). Only ``providers``, ``access`` and
``errors`` touch libcloud, and only inside functions, so importing this package stays cheap.
"""
