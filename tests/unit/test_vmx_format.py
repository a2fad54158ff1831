"""The .vmx parser: syntax, escapes, encodings, typed values and the errors for bad lines."""

from __future__ import annotations

import pytest

from vmshift.errors import SourceError
from vmshift.formats.vmx import (
    VmxError,
    decode_vmx,
    load_vmx,
    parse_bool,
    parse_int,
    parse_vmx,
    unescape,
)

SAMPLE = """\
#!/usr/bin/vmware
.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "web |22front|22 |7C prod"
memSize = "4096"
numvcpus = "2"

# a comment line
scsi0:0.fileName = "web.vmdk"
scsi0:0.present = "TRUE"
ethernet0.present = "false"
annotation = "line one|0Aline two"
"""


def test_keys_are_case_insensitive_and_values_unescaped() -> None:
    vmx = parse_vmx(SAMPLE, path="web.vmx")
    assert vmx.get("displayname") == 'web "front" | prod'
    assert vmx.get("DisplayName") == 'web "front" | prod'
    assert vmx.get("MEMSIZE") == "4096"
    assert "memsize" in vmx
    assert "memSize" in vmx
    assert "nothere" not in vmx
    assert vmx.get("annotation") == "line one\nline two"
    assert vmx.get(".encoding") == "UTF-8"
    assert set(vmx) >= {"scsi0:0.filename", "virtualhw.version", "config.version"}
    assert len(vmx) == 10


def test_line_numbers_are_kept() -> None:
    vmx = parse_vmx(SAMPLE, path="web.vmx")
    assert vmx.line_of("memsize") == 6
    assert vmx.line_of("scsi0:0.fileName") == 10
    assert vmx.line_of("nothere") is None


def test_duplicate_keys_last_one_wins() -> None:
    vmx = parse_vmx('memsize = "1024"\nMemSize = "2048"\n', path="x.vmx")
    assert vmx.get_int("memsize") == 2048
    assert vmx.line_of("memsize") == 2


def test_defaults_for_absent_keys() -> None:
    vmx = parse_vmx('a = "1"\nempty = ""\n', path="x.vmx")
    assert vmx.get("b") is None
    assert vmx.get("b", "dflt") == "dflt"
    assert vmx.get("empty") == ""
    assert vmx.get_int("b") is None
    assert vmx.get_int("b", 7) == 7
    assert vmx.get_int("empty", 3) == 3
    assert vmx.get_bool("b") is False
    assert vmx.get_bool("b", True) is True
    assert vmx.get_bool("empty", True) is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("TRUE", True),
        ("true", True),
        ("True", True),
        ("yes", True),
        ("1", True),
        ("FALSE", False),
        ("false", False),
        ("no", False),
        ("0", False),
        (" TRUE ", True),
        ("maybe", None),
        ("", None),
    ],
)
def test_parse_bool(text: str, expected: bool | None) -> None:
    assert parse_bool(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2048", 2048), (" 4 ", 4), ("0x10", 16), ("-1", -1), ("1.5", None), ("abc", None)],
)
def test_parse_int(text: str, expected: int | None) -> None:
    assert parse_int(text) == expected


def test_bad_typed_values_name_file_line_and_key() -> None:
    vmx = parse_vmx('memsize = "lots"\nscsi0.present = "maybe"\n', path="guest.vmx")
    with pytest.raises(VmxError, match=r'^guest\.vmx: line 1: memsize = "lots": expected a whole'):
        vmx.get_int("memsize")
    with pytest.raises(VmxError, match=r"^guest\.vmx: line 2: scsi0\.present .*TRUE or FALSE"):
        vmx.get_bool("scsi0.present")


def test_unquoted_values_and_trailing_comments() -> None:
    vmx = parse_vmx(
        'memsize = 1024 # MiB\nnumvcpus="2"   # two\nguestOS  =  "other"\nk = v|7Cw\n',
        path="x.vmx",
    )
    assert vmx.get("memsize") == "1024"
    assert vmx.get("numvcpus") == "2"
    assert vmx.get("guestos") == "other"
    assert vmx.get("k") == "v|w"


def test_hash_inside_quotes_is_data() -> None:
    vmx = parse_vmx('annotation = "issue #42"\n', path="x.vmx")
    assert vmx.get("annotation") == "issue #42"


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        ("a|22b", 'a"b'),
        ("a|7Cb", "a|b"),
        ("a|7cb", "a|b"),
        ("|23 not a comment", "# not a comment"),
        ("caf|C3|A9", "café"),  # an escaped UTF-8 sequence comes back whole
        ("pipe | alone", "pipe | alone"),
        ("|zz", "|zz"),
        ("end|", "end|"),
    ],
)
def test_unescape(escaped: str, plain: str) -> None:
    assert unescape(escaped) == plain


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("just some words", 'expected key = "value"'),
        ('= "no key"', 'expected key = "value"'),
        ('memsize = "1024', "unterminated quoted value"),
        ('memsize = "1024" extra', "unexpected text after the quoted value"),
        ('bad key = "x"', 'expected key = "value"'),
    ],
)
def test_malformed_lines_name_file_and_line(line: str, problem: str) -> None:
    text = f'.encoding = "UTF-8"\n# fine\n{line}\n'
    with pytest.raises(VmxError) as info:
        parse_vmx(text, path="/vms/guest.vmx")
    err = info.value
    assert isinstance(err, SourceError)
    assert err.line == 3
    assert err.path == "/vms/guest.vmx"
    assert str(err).startswith("/vms/guest.vmx: line 3: ")
    assert problem in str(err)


def test_declared_encoding_is_honoured() -> None:
    data = b'.encoding = "windows-1252"\ndisplayName = "caf\xe9"\n'
    vmx = load_vmx(data, path="x.vmx")
    assert vmx.get("displayname") == "café"


def test_undeclared_non_utf8_falls_back_to_latin1() -> None:
    text, encoding = decode_vmx(b'displayName = "caf\xe9"\n', path="x.vmx")
    assert encoding == "latin-1"
    assert "café" in text


def test_utf8_bom_and_crlf() -> None:
    vmx = load_vmx(b'\xef\xbb\xbfdisplayName = "vm"\r\nmemsize = "512"\r\n', path="x.vmx")
    assert vmx.get("displayname") == "vm"
    assert vmx.get_int("memsize") == 512


def test_unknown_encoding_and_binary_data_are_errors() -> None:
    with pytest.raises(VmxError, match=r'^x\.vmx: unknown \.encoding "klingon"'):
        load_vmx(b'.encoding = "klingon"\n', path="x.vmx")
    with pytest.raises(VmxError, match=r"^x\.vmx: not a VMX file"):
        load_vmx(b"KDMV\x01\x00\x00\x00", path="x.vmx")
    with pytest.raises(VmxError, match="not valid UTF-8"):
        load_vmx(b'.encoding = "UTF-8"\nx = "\xff"\n', path="x.vmx")
