"""Property: a template param value either passes its checks and lands verbatim inside the
one argv element that names it, or is rejected with TriggerRejected. Nothing in between:
no splitting, no re-expansion of placeholders, no other exception."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spoolq.config import JobTemplate, ParamSpec
from spoolq.errors import TriggerRejected
from spoolq.triggers import check_param, expand_template

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PATTERNS = [
    r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
    r"^[a-z0-9.-]{1,20}$",
    r"^\d{4}-\d{2}-\d{2}$",
    r"(?s).*",  # anything: the value must still arrive as one unchanged element
    r"[^;$`]*",
]
MAX_LEN = 64

# Any code point, surrogates included (JSON's "\ud800" produces them), plus the characters
# injection payloads are made of, so that both outcomes are exercised often.
NASTY = st.sampled_from([*";$`'\"\\\n\r\t\x00 {}()|&<>*?~-./", "{a}", "{b}", "$(id)"])
ANY_TEXT = st.lists(
    st.one_of(st.characters(exclude_categories=()), NASTY, st.text(max_size=3)), max_size=80
).map("".join)


def template(pattern: str) -> JobTemplate:
    return JobTemplate(
        argv=("prog", "{a}", "--a={a}", "{b}", "lit{a}{b}", "{x}", "{}"),
        params={
            "a": ParamSpec(pattern=pattern, max_length=MAX_LEN),
            "b": ParamSpec(pattern=r"(?s).*", max_length=MAX_LEN),
            "x": ParamSpec(type="enum", choices=("{a}", "$(id)")),
        },
    )


def acceptable(pattern: str, value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value and len(value) <= MAX_LEN and bool(re.fullmatch(pattern, value))


@FAST
@given(
    pattern=st.sampled_from(PATTERNS),
    a=st.one_of(ANY_TEXT, st.sampled_from(PATTERNS).flatmap(st.from_regex)),
    b=ANY_TEXT,
    x=st.sampled_from(["{a}", "$(id)"]),
)
def test_param_arrives_verbatim_or_is_rejected(pattern: str, a: str, b: str, x: str) -> None:
    tmpl = template(pattern)
    try:
        argv = expand_template("t", tmpl, {"a": a, "b": b, "x": x})
    except TriggerRejected as exc:
        assert not (acceptable(pattern, a) and acceptable(r"(?s).*", b)), exc.reason
        return
    assert acceptable(pattern, a) and acceptable(r"(?s).*", b)
    assert argv == ("prog", a, f"--a={a}", b, f"lit{a}{b}", x, "{}")


@FAST
@given(pattern=st.sampled_from(PATTERNS), value=ANY_TEXT)
def test_check_param_is_identity_or_rejection(pattern: str, value: str) -> None:
    spec = ParamSpec(pattern=pattern, max_length=MAX_LEN)
    try:
        out = check_param("p", value, spec)
    except TriggerRejected as exc:
        assert not acceptable(pattern, value)
        assert exc.reason.startswith("param p")
        return
    assert out == value
    assert acceptable(pattern, value)


@FAST
@given(value=st.one_of(st.integers(), ANY_TEXT, st.from_regex(r"-?[0-9]{1,18}", fullmatch=True)))
def test_int_param(value: int | str) -> None:
    spec = ParamSpec(type="int")
    text = str(value)
    try:
        out = check_param("n", value, spec)
    except TriggerRejected:
        assert not re.fullmatch(r"-?[0-9]{1,18}", text)
        return
    assert out == text and int(out) == int(text)


@pytest.fixture(scope="module")
def under(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paths")
    base = root / "staging"
    (base / "sub").mkdir(parents=True)
    (root / "outside").mkdir()
    os.symlink(root / "outside", base / "escape")
    os.symlink(base / "sub", base / "inside")
    return base.resolve()


PATH_TEXT = st.lists(
    st.sampled_from(["..", ".", "sub", "escape", "inside", "x.csv", "", "/", "a b", "$(id)"]),
    max_size=6,
).map("/".join)


@FAST
@given(value=st.one_of(PATH_TEXT, ANY_TEXT))
def test_path_param_resolves_under_or_is_rejected(under: Path, value: str) -> None:
    spec = ParamSpec(type="path", under=under, max_length=MAX_LEN)
    try:
        out = check_param("p", value, spec)
    except TriggerRejected as exc:
        assert exc.reason.startswith("param p")
        return
    # Accepted: one absolute path with no symlink left in it, strictly inside `under`.
    assert out == os.path.realpath(os.path.join(under, value))
    assert out.startswith(f"{under}/")
    assert not re.search(r"[\x00-\x1f\x7f]", out)


# A file or directory name as a producer would give one: any text but "/", NUL and the
# control characters, and not "." or "..", nor the fixture's symlinks (which resolve
# elsewhere by design).
NAME = st.text(
    st.characters(exclude_categories=("Cs", "Cc")).filter(lambda c: c != "/"),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", "..", "escape", "inside"))


@FAST
@given(data=st.data())
def test_every_value_valid_by_its_declaration_arrives_as_one_unchanged_element(
    under: Path, data: st.DataObject
) -> None:
    """The converse of the properties above, so that a template engine rejecting too much
    cannot pass: a value built from its param's own declaration (a string matching its
    pattern, any integer in range, any of the enum's choices, any path of plain names under
    ``under``) is accepted, and each lands in its argv element alone and unchanged (a path:
    the absolute path it names)."""
    pattern = data.draw(st.sampled_from(PATTERNS), "pattern")
    text = data.draw(
        st.from_regex(pattern, fullmatch=True).filter(lambda v: acceptable(pattern, v)), "str"
    )
    number = data.draw(st.integers(-(10**18) + 1, 10**18 - 1), "int")
    number_given = data.draw(st.sampled_from([number, str(number)]), "int as given")
    choices = data.draw(
        st.lists(ANY_TEXT.filter(lambda v: acceptable(r"(?s).*", v)), min_size=1, unique=True),
        "choices",
    )
    choice = data.draw(st.sampled_from(choices), "enum")
    rel = "/".join(data.draw(st.lists(NAME, min_size=1, max_size=4), "path names"))
    path = data.draw(st.sampled_from([rel, f"{under}/{rel}"]), "path")
    tmpl = JobTemplate(
        argv=("prog", "{s}", "{n}", "{e}", "{p}", "--s={s}"),
        params={
            "s": ParamSpec(pattern=pattern, max_length=MAX_LEN),
            "n": ParamSpec(type="int"),
            "e": ParamSpec(type="enum", choices=tuple(choices)),
            "p": ParamSpec(type="path", under=under, max_length=4 * 13 + len(str(under))),
        },
    )
    argv = expand_template("t", tmpl, {"s": text, "n": number_given, "e": choice, "p": path})
    assert argv == ("prog", text, str(number), choice, f"{under}/{rel}", f"--s={text}")
