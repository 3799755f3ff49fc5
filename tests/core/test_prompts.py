"""Prompt files: JSONL, the OpenAI batch format and CSV; a bad row is named by number, the rest run."""

from __future__ import annotations

import json

import pytest

from genq.core.data.prompts import parse_prompts
from genq.core.errors import DataError


def jsonl(*rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def test_jsonl_rows_with_ids_and_their_own_params():
    rows = parse_prompts(jsonl({"prompt": "ROMEO:", "id": "a", "max_new_tokens": 20, "temperature": 0.5,
                                "top_k": 5, "top_p": 0.9, "seed": 3, "stop": "\n"}, {"prompt": "JULIET:"}), "jsonl")
    assert [(r.row, r.prompt, r.row_id, r.error) for r in rows] == [(0, "ROMEO:", "a", None),
                                                                    (1, "JULIET:", None, None)]
    assert rows[0].params == {"max_new_tokens": 20, "temperature": 0.5, "top_k": 5, "top_p": 0.9, "seed": 3,
                              "stop": ["\n"]}


def test_openai_batch_rows():
    rows = parse_prompts(jsonl(
        {"custom_id": "r1", "method": "POST", "url": "/v1/completions", "body": {"prompt": "Hi", "max_tokens": 9}},
        {"custom_id": "r2", "body": {"messages": [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "Hello"}]}}), "jsonl")
    assert [(r.prompt, r.row_id, r.params) for r in rows] == [("Hi", "r1", {"max_new_tokens": 9}),
                                                              ("Be brief.\nHello", "r2", {})]


def test_csv_prompt_column_and_template():
    data = b"name,features,id\nlamp,brass,L1\nchair,oak,C2\n"
    rows = parse_prompts(data, "csv", template="Describe {name}: {features}")
    assert [(r.prompt, r.row_id) for r in rows] == [("Describe lamp: brass", "L1"), ("Describe chair: oak", "C2")]
    assert [r.prompt for r in parse_prompts(b"id,prompt\n1,hello\n2,world\n", "csv")] == ["hello", "world"]
    with pytest.raises(DataError, match="column 'colour'"):
        parse_prompts(data, "csv", template="A {colour} {name}")


def test_a_top_k_or_seed_past_what_a_tensor_holds_is_a_bad_row():
    rows = parse_prompts(jsonl({"prompt": "ok", "top_k": 40, "seed": 2**63 - 1}, {"prompt": "big", "top_k": 10**30},
                               {"prompt": "huge seed", "seed": 2**63}, {"prompt": "cold", "temperature": 1e-300}),
                         "jsonl")
    assert [r.error is None for r in rows] == [True, False, False, False]
    assert '"top_k"' in rows[1].error and '"seed"' in rows[2].error and '"temperature"' in rows[3].error


def test_bad_rows_are_named_by_number_and_the_rest_kept():
    rows = parse_prompts(jsonl({"prompt": "ok"}, "[1, 2]", "{not json", {"id": 4}, {"prompt": "x", "top_p": 2},
                               {"prompt": "y", "max_new_tokens": "ten"}, {"prompt": "z", "temperature": True},
                               {"prompt": 5}, {"prompt": "fine", "seed": 1}), "jsonl")
    errors = {r.row: r.error for r in rows if r.error}
    assert [r.row for r in rows if r.error is None] == [0, 8]
    assert "row 1 (line 2)" in errors[1] and "not an object" in errors[1]
    assert "row 2 (line 3)" in errors[2] and "not JSON" in errors[2]
    assert "no prompt" in errors[3]
    assert '"top_p"' in errors[4] and '"max_new_tokens"' in errors[5] and '"temperature"' in errors[6]
    assert "int, not a string" in errors[7]


@pytest.mark.parametrize("data, fmt, message", [
    (b"", "jsonl", "empty"),
    (b"  \n\n", "csv", "empty"),
    (b'{"prompt": "caf\xe9"}\n', "jsonl", "not UTF-8.*line 1"),
    (jsonl({"id": 1}, "[]"), "jsonl", "no usable row: row 0"),
    (jsonl({"prompt": "x"}), "jsonl", None),
])
def test_whole_file_refusals(data, fmt, message):
    if message is None:
        assert parse_prompts(data, fmt)[0].prompt == "x"
        return
    with pytest.raises(DataError, match=message):
        parse_prompts(data, fmt)


def test_nan_is_not_a_number_here():
    rows = parse_prompts(jsonl({"prompt": "a"}, '{"prompt": "b", "temperature": NaN}'), "jsonl")
    assert rows[1].error and "not JSON" in rows[1].error


def test_a_json_string_may_hold_unicode_line_separators():
    rows = parse_prompts('{"prompt": "ROMEO:\u2028JULIET:", "id": "ls"}\n{"prompt": "KING\u0085x"}\n'
                         '{"prompt": "ROMEO:"}\n'.encode(), "jsonl")
    assert [(r.prompt, r.error) for r in rows] == [("ROMEO:\u2028JULIET:", None), ("KING\u0085x", None),
                                                   ("ROMEO:", None)]


def test_an_empty_prompt_is_a_bad_row_and_a_bad_row_keeps_its_prompt():
    rows = parse_prompts(jsonl({"prompt": "  "}, {"prompt": "JULIET:", "id": "j", "max_new_tokens": "x"},
                               {"prompt": "ROMEO:"}), "jsonl")
    assert [(r.prompt, r.row_id, r.error) for r in rows] == [
        (None, None, "row 0 (line 1): its prompt is empty"),
        ("JULIET:", "j", 'row 1 (line 2): "max_new_tokens" must be an integer from 1 to 100000, got "x"'),
        ("ROMEO:", None, None)]


def test_a_csv_of_several_columns_needs_a_prompt_column_or_a_template():
    data = b"name,features\nbob,tall\nann,short\n"
    with pytest.raises(DataError, match="the CSV has no 'prompt' column .its first row: name, features."):
        parse_prompts(data, "csv")
    # at upload (the job names the template): the first row is the header, not a prompt
    assert len(parse_prompts(data, "csv", template_later=True)) == 2
    assert [r.prompt for r in parse_prompts(data, "csv", "{name} is {features}")] == ["bob is tall", "ann is short"]
    assert [r.prompt for r in parse_prompts(b"seven\nthree\n", "csv")] == ["seven", "three"]  # one column: headerless


def test_a_csv_quote_left_open_is_refused_and_bare_carriage_returns_end_lines():
    with pytest.raises(DataError, match="not valid CSV: a quoted field is never closed"):
        parse_prompts(b'prompt,id\n"unterminated,a\nKING:,b\n', "csv")
    assert [r.prompt for r in parse_prompts(b"prompt\rROMEO\rKING\r", "csv")] == ["ROMEO", "KING"]


def test_a_template_takes_any_column_name_as_it_stands():
    # str.format would read {a.b} as an attribute, {a[x]} as an index and {0} as a position (a KeyError, a 500)
    data = b"a.b,a[x],0,id\nlamp,brass,7,L1\n"
    rows = parse_prompts(data, "csv", template="{a.b} of {a[x]} #{0}")
    assert [(r.prompt, r.row_id, r.error) for r in rows] == [("lamp of brass #7", "L1", None)]
    with pytest.raises(DataError, match="template is empty"):
        parse_prompts(data, "csv", template=" ")


def test_csv_param_columns_are_each_rows_params_and_a_bad_one_is_a_bad_row():
    data = b"prompt,seed,temperature,max_new_tokens,stop\nA,7,1,3,\nB,,0.5,,.\nC,abc,1,3,\nD,7,-1,3,\n"
    rows = parse_prompts(data, "csv")
    assert [r.params for r in rows[:2]] == [{"seed": 7, "temperature": 1.0, "max_new_tokens": 3},
                                            {"temperature": 0.5, "stop": ["."]}]
    assert [r.row for r in rows if r.error] == [2, 3]
    assert '"seed"' in rows[2].error and '"temperature"' in rows[3].error
    templated = parse_prompts(b"name,Seed\nlamp,4\n", "csv", template="Describe {name}")
    assert templated[0].params == {"seed": 4}


def test_one_long_csv_cell_is_a_bad_row_not_a_refused_file():
    rows = parse_prompts(b"prompt\n" + b"b" * 1_000_000 + b"\nok\n", "csv")
    assert "row 0" in rows[0].error and "10000 characters" in rows[0].error and rows[1].prompt == "ok"


def test_json_nested_past_the_parsers_depth_is_a_bad_row():
    rows = parse_prompts(('{"prompt": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n").encode()
                         + jsonl({"prompt": "ok"}), "jsonl")
    assert "not JSON" in rows[0].error and rows[1].prompt == "ok"


def test_a_number_of_thousands_of_digits_is_a_bad_row_said_without_python():
    rows = parse_prompts(jsonl('{"prompt": "a", "seed": ' + "9" * 5000 + "}", {"prompt": "ok"}), "jsonl")
    assert rows[0].error.endswith("it is not JSON (a number of 5000 digits is past any limit)"), rows[0].error
    assert rows[1].prompt == "ok"


def test_a_csv_row_of_more_or_fewer_cells_than_its_header_is_a_bad_row():
    rows = parse_prompts(b"name,features\nA,B,C,D\nE\nF,G\n\nH,I,,\n", "csv", "{name} {features}")
    assert [r.error for r in rows] == [
        "row 0 (line 2): has 4 cells where the header has 2 (a cell holding a comma must be quoted)",
        "row 1 (line 3): has 1 cell where the header has 2 (a cell holding a comma must be quoted)", None,
        "row 3 (line 6): has 4 cells where the header has 2 (a cell holding a comma must be quoted)"]
    assert [r.prompt for r in rows] == ["A B", "E ", "F G", "H I"]  # a bad row keeps a prompt, to tell which
    # headerless prompts: an unquoted comma split the prompt, whose second half was dropped
    rows = parse_prompts(b"Hello\nHi, there\n\"Yes, quoted\"\n", "csv")
    assert [r.prompt for r in rows] == ["Hello", "Hi", "Yes, quoted"] and [r.error is None for r in rows] == [
        True, False, True]
    assert rows[1].error == ("row 1 (line 2): has 2 cells where the first row has 1 (a cell holding a comma must be "
                             "quoted)")
    # an unquoted comma with the last column empty: its second half went to that column
    rows = parse_prompts(b"id,prompt,notes\nr1,ROMEO: speak,\nr2,Hello, world,\n", "csv")
    assert [(r.row_id, r.prompt, r.error is None) for r in rows] == [("r1", "ROMEO: speak", True),
                                                                      ("r2", "Hello", False)]
    assert "has 4 cells where the header has 3" in rows[1].error


def test_csv_ids_are_read_whatever_the_case_of_their_column_and_kept_on_bad_rows():
    rows = parse_prompts(b"Name,ID\nRomeo,k1\n,k2\n", "csv", "Hi {Name}")
    assert [(r.row_id, r.prompt) for r in rows] == [("k1", "Hi Romeo"), ("k2", "Hi ")]
    rows = parse_prompts(b"Prompt,Id,seed\nROMEO:,k1,1\nJULIET:,k2,x\n,k3,\n", "csv")
    assert [(r.row_id, r.prompt, r.error) for r in rows] == [
        ("k1", "ROMEO:", None),
        ("k2", "JULIET:", 'row 1 (line 3): "seed" must be an integer from 0 to 2**63 - 1, got "x"'),
        ("k3", None, "row 2 (line 4): its prompt is empty")]
    long_id = parse_prompts(b"prompt,id\nhello," + b"i" * 201 + b"\nok,2\n", "csv")
    assert long_id[0].row_id is None and "its id must be a string or an integer of at most 200" in long_id[0].error


def test_a_csv_for_a_template_uploads_whatever_its_first_column_holds():
    rows = parse_prompts(b"notes,name,features\n,Romeo,sad\n,Juliet,young\n", "csv", template_later=True)
    assert [(r.prompt, r.error) for r in rows] == [(None, None), (None, None)]
    rows = parse_prompts(b"notes,name,features\n,Romeo,sad\n", "csv", "Describe {name}: {features}")
    assert [(r.prompt, r.error) for r in rows] == [("Describe Romeo: sad", None)]
    with pytest.raises(DataError, match="no 'prompt' column"):
        parse_prompts(b"notes,name,features\n,Romeo,sad\n", "csv")


def test_a_csv_header_that_names_a_column_twice_is_refused():
    with pytest.raises(DataError, match="the CSV header names the column 'prompt' twice"):
        parse_prompts(b"prompt,Prompt\nA,B\n", "csv")


def test_a_json_key_that_misspells_a_row_param_is_a_bad_row_and_max_tokens_is_max_new_tokens():
    rows = parse_prompts(jsonl({"prompt": "a", "maxNewTokens": 2}, {"prompt": "b", "temperatur": 0.5},
                               {"prompt": "c", "max_tokens": 3}, {"prompt": "d", "category": "x", "top": 1},
                               {"custom_id": "e", "body": {"prompt": "e", "Top_P": 0.5}}), "jsonl")
    assert [r.error for r in rows] == [
        'row 0 (line 1): unknown key "maxNewTokens": did you mean "max_new_tokens"?',
        'row 1 (line 2): unknown key "temperatur": did you mean "temperature"?', None, None,
        'row 4 (line 5): unknown key "Top_P": did you mean "top_p"?']
    assert rows[2].params == {"max_new_tokens": 3} and rows[3].params == {}
    # a CSV's columns are a template's data, whatever their names
    assert parse_prompts(b"prompt,seeds\nROMEO:,4\n", "csv")[0].error is None


def test_an_id_with_a_nul_or_a_lone_surrogate_is_a_bad_row_and_the_other_rows_run():
    """Neither can be stored (PostgreSQL's text holds no NUL; UTF-8 has no lone surrogates): refused at upload,
    where the rest of the file still runs, not when the job stores its first row."""
    rows = parse_prompts(jsonl('{"prompt": "ROMEO:", "id": "a\\u0000b"}', '{"prompt": "KING:", "id": "x\\ud800"}',
                               {"prompt": "JULIET:", "id": "ok"}), "jsonl")
    assert [(r.prompt, r.row_id, r.error) for r in rows] == [
        ("ROMEO:", None, "row 0 (line 1): its id has a NUL character"),
        ("KING:", None, "row 1 (line 2): its id holds invalid Unicode (a lone surrogate)"),
        ("JULIET:", "ok", None)]
    csv_rows = parse_prompts(b"id,prompt\na\x00b,ROMEO:\nok,KING:\n", "csv")
    assert [(r.prompt, r.row_id, r.error) for r in csv_rows] == [
        ("ROMEO:", None, "row 0 (line 2): its id has a NUL character"), ("KING:", "ok", None)]
    assert parse_prompts(jsonl({"prompt": 7}, {"prompt": "x"}), "jsonl")[0].error == \
        "row 0 (line 1): its prompt is an int, not a string"


@pytest.mark.parametrize("data, words", [(b"id\tprompt\n1\tROMEO:\n", "tabs"),
                                         (b"prompt;id\nROMEO:;1\n", "semicolons")])
def test_a_header_separated_by_tabs_or_semicolons_is_refused_not_read_as_a_prompt(data, words):
    with pytest.raises(DataError, match=f"header is separated by {words}: a CSV separates its columns with commas"):
        parse_prompts(data, "csv")
    one = parse_prompts(b"Write a prompt; be brief\nROMEO:\n", "csv")  # a prompt may hold a semicolon
    assert [r.prompt for r in one] == ["Write a prompt; be brief", "ROMEO:"]


def test_a_bad_param_is_named_by_the_key_the_row_wrote():
    rows = parse_prompts(jsonl({"custom_id": "a", "body": {"prompt": "x", "max_tokens": "lots"}},
                               {"prompt": "y", "max_tokens": 0}, {"prompt": "z", "max_new_tokens": 0},
                               {"prompt": "ok"}), "jsonl")
    assert [r.error.split(": ", 1)[1].split(" must")[0] for r in rows[:3]] == [
        '"body.max_tokens"', '"max_tokens"', '"max_new_tokens"']
