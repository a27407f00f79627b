"""``import_yaml``: PyYAML's reader finds its class of refused characters compiled the cheap way,
and refuses exactly what it refused before."""

from __future__ import annotations

import re
import subprocess
import sys

from provisioning.inputs.yamlfile import READER_CLASS, SAME_CHARACTERS

#: what the pure-Python reader says of a text with a bell, a surrogate and U+FFFE in it, and
#: which class it used
PROBE = """
import sys
{imports}
import yaml
from yaml.reader import Reader
messages = []
for text in ("a: \\x07", "b: \\ud800", "c: ok \\ufffe", "d: fine \\u00e9 \\U0001f600"):
    try:
        messages.append(repr(yaml.load(text, Loader=yaml.SafeLoader)))
    except yaml.YAMLError as exc:
        messages.append(str(exc))
print(Reader.NON_PRINTABLE.pattern == {same!r})
print(ascii(messages))
"""


def _probe(imports: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports,
                                                                same=SAME_CHARACTERS)],
                          capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_the_two_classes_hold_the_same_characters():
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    # re.UNICODE (the default for text) makes a key of its own: READER_CLASS compiled anew
    assert re.compile(SAME_CHARACTERS).findall(every) == \
        re.compile(READER_CLASS, re.UNICODE).findall(every)


def test_the_reader_class_is_the_installed_pyyaml_s():
    done = subprocess.run([sys.executable, "-c", "import yaml.reader\n"
                           "print(ascii(yaml.reader.Reader.NON_PRINTABLE.pattern))"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ascii(READER_CLASS)


def test_yaml_imported_through_import_yaml_refuses_what_it_refused():
    plain = _probe("")
    ours = _probe("from provisioning.inputs.yamlfile import import_yaml\nimport_yaml()")
    assert plain[0] == "False" and ours[0] == "True"  # the cheap class is the one in use
    assert ours[1] == plain[1]
    assert "special characters are not allowed" in plain[1]
    assert "{'d': 'fine" in plain[1]
