"""Prompt files for batch generation: JSONL rows, the OpenAI batch format, or CSV (a `prompt` column, or a
`template` over any columns). Torch-free: the platform validates uploads with it and the worker reads rows.

Each row is checked on its own: a bad row becomes a PromptRow with an `error` naming its number and the
reason, and the file is refused (DataError) only when no row is usable.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from genq.core import strict_json
from genq.core.errors import DataError
from genq.core.spec import (
    MAX_NEW_TOKENS,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOPS,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MIN_TEMPERATURE,
)

MAX_ROWS = 10_000
MAX_PROMPT_CHARS = 10_000
MAX_FIELD_CHARS = 64 * 1024 * 1024  # above any cell of a file the upload limit (32 MiB) lets through
# per-row params: (types allowed, check, what the check says)
ROW_PARAMS: dict[str, tuple[tuple[type, ...], Any, str]] = {
    "max_new_tokens": ((int,), lambda v: 1 <= v <= MAX_NEW_TOKENS, f"an integer from 1 to {MAX_NEW_TOKENS}"),
    "temperature": ((int, float), lambda v: MIN_TEMPERATURE <= v <= MAX_TEMPERATURE,
                    f"a number from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE}"),
    "top_k": ((int,), lambda v: 1 <= v <= MAX_TOP_K, f"an integer from 1 to {MAX_TOP_K}"),
    "top_p": ((int, float), lambda v: 0 < v <= 1, "a number above 0, at most 1"),
    "seed": ((int,), lambda v: 0 <= v <= MAX_SEED, "an integer from 0 to 2**63 - 1"),
}
OPENAI_NAMES = {"max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens"}


@dataclass
class PromptRow:
    """One input row: its prompt and own params, or the error that keeps it from running."""

    row: int  # from 0, in file order
    prompt: str | None
    row_id: str | None = None  # the row's "id" or "custom_id"
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what a job's worker reads back)."""
        return {"row": self.row, "prompt": self.prompt, "row_id": self.row_id, "params": self.params,
                "error": self.error}


class RowError(ValueError):
    """One row cannot run; the message says why."""


def _check_keys(values: dict[str, Any]) -> dict[str, Any]:
    """`values`, or RowError for a key that misspells a per-row param: a JSON row's other keys are its own data
    (a CSV's columns are a template's data: "seeds" may be one, so they are not checked)."""
    for key in values:
        if (meant := _misspelt(key)) is not None:
            raise RowError(f'unknown key "{key}": did you mean "{meant}"?')
    return values


def _misspelt(key: str) -> str | None:
    """The per-row param that `key`, not one, looks like a misspelling of (maxNewTokens, temperatur), if any."""
    names = [*ROW_PARAMS, "stop"]
    if key in names:
        return None
    squashed = key.lower().replace("_", "").replace("-", "").replace(" ", "")
    same = [n for n in names if n.replace("_", "") == squashed]
    return (same or difflib.get_close_matches(key.lower(), names, n=1, cutoff=0.88) or [None])[0]


def check_row_params(values: dict[str, Any], written: dict[str, str] | None = None) -> dict[str, Any]:
    """The per-row params among `values` (unknown keys ignored), or RowError naming the bad one as the row wrote
    it (`written`: param -> the key it came from, "body.max_tokens" say)."""
    out: dict[str, Any] = {}
    for name, (types, ok, what) in ROW_PARAMS.items():
        if values.get(name) is None:
            continue
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, types) or (
                isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise RowError(f'"{(written or {}).get(name, name)}" must be {what}, got {json.dumps(value)[:40]}')
        out[name] = value
    stop = values.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS
                                                  for s in stops) or len(stops) > MAX_STOPS:
            raise RowError(f'"stop" must be a string or a list of at most {MAX_STOPS} non-empty strings of at '
                           f'most {MAX_STOP_CHARS} characters')
        out["stop"] = stops
    return out


def _check_prompt(prompt: object) -> str:
    if not isinstance(prompt, str):
        kind = type(prompt).__name__
        raise RowError("it has no prompt" if prompt is None else f"its prompt is {_a(kind)} {kind}, not a string")
    if not prompt.strip():
        raise RowError("its prompt is empty")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RowError(f"its prompt has more than {MAX_PROMPT_CHARS} characters")
    _check_text(prompt, "its prompt")
    return prompt


def bad_string(text: str) -> bool:
    """True if `text` cannot be stored as SQL text (NUL) or encoded as UTF-8 (lone surrogates)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_text(text: str, what: str) -> None:
    """RowError unless `text` can be stored: no NUL character (PostgreSQL's text holds none), valid Unicode."""
    if bad_string(text):
        raise RowError(f"{what} has a NUL character" if "\x00" in text
                       else f"{what} holds invalid Unicode (a lone surrogate)")


def _a(word: str) -> str:
    """The indefinite article of `word`."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def _row_id(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or len(str(value)) > 200:
        raise RowError("its id must be a string or an integer of at most 200 characters")
    _check_text(str(value), "its id")
    return str(value)


def _json_row(obj: object) -> tuple[str, str | None, dict[str, Any]]:
    """(prompt, row id, params) of one JSONL object: genq's own form or an OpenAI batch request."""
    if not isinstance(obj, dict):
        raise RowError(f"it is a JSON {type(obj).__name__}, not an object")
    if "body" in obj or "custom_id" in obj:
        body = obj.get("body")
        if not isinstance(body, dict):
            raise RowError('an OpenAI batch row needs a "body" object')
        if "messages" in body:
            messages = body["messages"]
            if not isinstance(messages, list) or not messages or not all(
                    isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
                raise RowError('"body.messages" must be a list of objects with a string "content"')
            prompt: object = "\n".join(m["content"] for m in messages)
        else:
            prompt = body.get("prompt")
        values = {OPENAI_NAMES.get(k, k): v for k, v in body.items()}
        written = {OPENAI_NAMES.get(k, k): f"body.{k}" for k in body}
        return _check_prompt(prompt), _row_id(obj.get("custom_id")), check_row_params(_check_keys(values), written)
    values = {OPENAI_NAMES.get(k, k): v for k, v in obj.items()}  # max_tokens, as in an OpenAI body
    written = {OPENAI_NAMES[k]: k for k in obj if k in OPENAI_NAMES}
    return _check_prompt(obj.get("prompt")), _row_id(obj.get("id")), check_row_params(_check_keys(values), written)


def template_fields(template: str) -> list[str]:
    """The column names a template like "Describe {name}: {features}" names; DataError if it is malformed."""
    if not template.strip():
        raise DataError("the template is empty: name columns in braces, like \"Describe {name}\"")
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise DataError(f"the template is malformed: {exc}") from None
    if any(not name for name, _, _ in fields):
        raise DataError("the template must name columns in braces, like {name}")
    if any(spec or conversion for _, spec, conversion in fields):  # {name!r}, {name:>9}: Python's, not ours
        raise DataError("the template takes column names in braces only, like {name}: no conversion (!r) or "
                        "format spec (:>10)")
    return [name for name, _, _ in fields]


def render_template(template: str, cells: dict[str, str]) -> str:
    """`template` with each {name} replaced by the cell of that column ("" when the row has none). Not
    str.format: a column may be named "a.b", "x[1]" or "0", which str.format reads as an attribute, an index or
    a position."""
    return "".join(literal + (cells.get(name, "") if name is not None else "")
                   for literal, name, _, _ in string.Formatter().parse(template))


def _csv_params(cells: dict[str, str]) -> dict[str, Any]:
    """The per-row params of a CSV row's columns named like them (max_new_tokens, temperature, top_k, top_p,
    seed, stop; an empty cell is no value), read from their text as JSONL's numbers would be."""
    values: dict[str, Any] = {}
    for name, (types, _, what) in ROW_PARAMS.items():
        text = cells.get(name, "").strip()
        if not text:
            continue
        try:
            values[name] = int(text) if types == (int,) else float(text)
        except ValueError:
            raise RowError(f'"{name}" must be {what}, got {json.dumps(text)[:40]}') from None
    if cells.get("stop"):
        values["stop"] = cells["stop"]
    return check_row_params(values)


def _check_width(cells: list[str], width: int) -> None:
    """RowError when a CSV row has more or fewer cells than the first row: an unquoted comma in a prompt split it
    (even with the last column empty, the prompt's second half went to the next column)."""
    if len(cells) != width:
        first = "the header has" if width > 1 else "the first row has"
        raise RowError(f"has {len(cells)} cell{'s' * (len(cells) != 1)} where {first} {width} (a cell holding a "
                       "comma must be quoted)")


_SEPARATORS = {"\t": "tabs", ";": "semicolons", "|": "bars"}


def _other_separator(cell: str) -> str | None:
    """The separator other than a comma (tab, semicolon, bar) that splits a one-column header's `cell` into
    columns, one of them 'prompt'; None if none does."""
    return next((sep for sep in _SEPARATORS if sep in cell and "prompt" in (c.strip() for c in cell.split(sep))),
                None)


def _csv_rows(text: str, template: str | None, template_later: bool
              ) -> tuple[list[tuple[str | None, str | None, dict[str, Any]] | RowError], list[int]]:
    """(each row's (prompt, id, params) or its RowError, each row's last line in the file). A CSV of several
    columns and no 'prompt' one, with template_later, has rows of no prompt yet: a job's template makes them."""
    # strict: a quote left open swallowed the rest of the file into one prompt; newline="": the reader takes
    # \r, \n and \r\n line ends alike (a file of bare \r ends was refused in Python's words)
    csv.field_size_limit(MAX_FIELD_CHARS)  # the reader's default, 131,072, refused a whole file for one long cell
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    table, line_of = [], []
    try:
        for r in reader:
            if r and any(c.strip() for c in r):
                table.append(r)
                line_of.append(reader.line_num)
    except csv.Error as exc:
        why = "a quoted field is never closed" if "end of data" in str(exc) else str(exc)
        raise DataError(f"the prompts file is not valid CSV: {why}") from None
    header = [c.strip() for c in table[0]] if table else []
    lower = [c.lower() for c in header]
    if len(header) > 1 and (twice := next((n for n in lower if n and lower.count(n) > 1), None)):
        raise DataError(f"the CSV header names the column '{header[lower.index(twice)]}' twice: give each column a "
                        "name of its own")
    out: list[tuple[str | None, str | None, dict[str, Any]] | RowError] = []
    has_header = "prompt" in lower
    if len(header) == 1 and (sep := _other_separator(lower[0])):
        # its header would be read as a prompt, and every row as one prompt of the whole line
        raise DataError(f"the prompts file's header is separated by {_SEPARATORS[sep]}: a CSV separates its columns "
                        "with commas (save it as comma-separated CSV)")
    if template is None and not has_header and len(header) > 1 and not template_later:
        raise DataError(f"the CSV has no 'prompt' column (its first row: {', '.join(header)[:200]}): name the "
                        "column of prompts 'prompt', or give a template over the columns")
    if template is not None and (missing := [n for n in template_fields(template) if n not in header]):
        raise DataError(f"the template names the column '{missing[0]}', which the CSV header "
                        f"({', '.join(header)}) does not have")
    # several columns are a header even without 'prompt' (a job's template names them): not a row; one column
    # without it holds headerless prompts
    body = table[1:] if has_header or len(header) > 1 else table
    for r in body:
        cells = {name: cell for name, cell in zip(lower, r, strict=False)}  # by lowercased column name
        if template is not None:
            prompt = render_template(template, dict(zip(header, r, strict=False)))
        elif has_header or len(header) == 1:
            column = lower.index("prompt") if has_header else 0
            prompt = r[column] if column < len(r) else None
        else:
            prompt = None  # no prompt until a job's template makes it
        try:
            _check_width(r, len(header))
            out.append((prompt if prompt is None else _check_prompt(prompt), _row_id(cells.get("id") or None),
                        _csv_params(cells) if len(header) > 1 else {}))
        except RowError as exc:
            exc.row_id, exc.prompt = _salvaged(cells.get("id") or None, prompt)
            out.append(exc)
    return out, line_of[len(table) - len(body):]


def parse_prompts(data: bytes, fmt: str, template: str | None = None, template_later: bool = False
                  ) -> list[PromptRow]:
    """The rows of a prompts file's bytes (`fmt` "jsonl" or "csv"): each usable or carrying its error.
    DataError when the file as a whole is unusable: empty, not UTF-8, too many rows, or no usable row; or a CSV of
    several columns, none named 'prompt', without a template (template_later: at upload, a job may name one)."""
    if not data.strip():
        raise DataError("the prompts file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"the prompts file is not UTF-8 text (invalid byte at offset {exc.start}, line {line})"
                        ) from None
    parsed: list[tuple[str, str | None, dict[str, Any]] | RowError] = []
    lines: list[int] = []  # the file line of each row, for messages
    if fmt == "jsonl":
        if template is not None:
            raise DataError("a template applies to CSV prompts files only")
        for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may stand in a string
            if not line.strip():
                continue
            lines.append(number)
            try:
                obj = strict_json.loads(line)
            except ValueError as exc:
                parsed.append(RowError(f"it is not JSON ({exc})"))
                continue
            try:
                parsed.append(_json_row(obj))
            except RowError as exc:
                exc.row_id, exc.prompt = (_salvaged(obj.get("custom_id", obj.get("id")), obj.get("prompt"))
                                          if isinstance(obj, dict) else (None, None))
                parsed.append(exc)
    else:
        parsed, lines = _csv_rows(text, template, template_later)
    if len(parsed) > MAX_ROWS:
        raise DataError(f"the prompts file holds {len(parsed)} rows (at most {MAX_ROWS})")
    rows = []
    for i, item in enumerate(parsed):
        if isinstance(item, RowError):
            where = f"row {i} (line {lines[i]})" if lines else f"row {i}"
            rows.append(PromptRow(row=i, prompt=getattr(item, "prompt", None), row_id=getattr(item, "row_id", None),
                                  error=f"{where}: {item}"))
        else:
            rows.append(PromptRow(row=i, prompt=item[0], row_id=item[1], params=item[2]))
    if not any(r.error is None for r in rows):
        if not rows:
            raise DataError("the prompts file holds no prompts")
        raise DataError(f"the prompts file has no usable row: {rows[0].error}")
    return rows


def _salvaged(row_id: object, prompt: object) -> tuple[str | None, str | None]:
    """(id, prompt) that a bad row keeps, each when it is a usable one: to tell which row it was."""
    return _usable(_row_id, row_id), _usable(_check_prompt, prompt)


def _usable(check: Callable[[Any], str | None], value: object) -> str | None:
    """check(value), or None where it refuses the value."""
    try:
        return check(value)
    except RowError:
        return None


