from hypothesis import given
from hypothesis import strategies as st

from completion.stops import check_text, decide_policy, finalize, trim_suffix_overlap

SOURCE = (
    "import math\n"
    "\n"
    "class Shape:\n"
    "    def area(self, r):\n"
    "        total = math.pi * \n"
    "\n"
    "        return total\n"
    "\n"
    "    def name(self):\n"
    "        return compute()\n"
)


def _at(marker_line: int, column: int, text: str = SOURCE) -> int:
    lines = text.split("\n")
    return sum(len(line) + 1 for line in lines[:marker_line]) + column


def test_mid_line_finishes_the_line():
    policy = decide_policy(SOURCE, _at(4, 26), "python")
    assert not policy.multiline


def test_code_right_of_cursor_keeps_single_line():
    policy = decide_policy(SOURCE, _at(9, 23), "python")  # inside compute(|)
    assert not policy.multiline
    assert policy.line_suffix == ")"


def test_blank_line_in_block_uses_block_indentation():
    policy = decide_policy(SOURCE, _at(5, 0), "python")
    assert policy.multiline
    assert policy.min_indent == 8  # found by tree-sitter: the method body
    assert policy.next_code_line == "return total"


def test_indented_cursor_uses_its_column():
    text = "def f():\n    \n"
    policy = decide_policy(text, _at(1, 4, text), "python")
    assert policy.multiline and policy.min_indent == 4


def test_a_header_over_a_body_that_is_below_is_one_line():
    text = "def f(x):\n    if x:\n        return 1\n    \n        return 2\n"
    policy = decide_policy(text, _at(3, 4, text), "python")
    assert policy.rejoin_below
    check = check_text("else:\n        return 2\n", policy)
    assert check.stop and check.text == "else:"


def test_lines_that_lead_into_the_code_below_are_kept():
    text = "def to_base(x, base):\n    ret = ''\n    \n        x //= base\n    return ret\n"
    policy = decide_policy(text, _at(2, 4, text), "python")
    generated = "while x > 0:\n        ret = str(x % base) + ret\n        x //= base\n"
    check = check_text(generated, policy)
    assert check.stop and check.reason == "reached_suffix"
    assert finalize(check.text, policy, check.reason) == "while x > 0:\n        ret = str(x % base) + ret"


def test_lines_that_never_rejoin_the_code_below_are_dropped():
    text = "def to_base(x, base):\n    ret = ''\n    \n        x //= base\n    return ret\n"
    policy = decide_policy(text, _at(2, 4, text), "python")
    left = check_text("while x > 0:\n        ret = str(x) + ret\n    return ret\n", policy)
    assert left.stop and left.text == "while x > 0:"  # the model left the block
    long_body = "while x > 0:\n" + "".join(f"        y{i} = {i}\n" for i in range(6))
    assert check_text(long_body, policy).text == "while x > 0:"
    # The model ended the middle itself after a body line: kept; cut by the budget: not.
    unfinished = "while x > 0:\n        ret = str(x % base) + ret"
    assert finalize(unfinished, policy, "eos") == unfinished
    assert finalize(unfinished, policy, "time_budget") == "while x > 0:"


def test_a_closing_bracket_the_text_opened_is_not_taken_for_the_suffix():
    text = "def f(words):\n    return sorted(words, key=lambda ), x))[0]\n"
    cursor = text.index("lambda ") + len("lambda ")
    policy = decide_policy(text, cursor, "python")
    assert finalize("x: (-len(set(x)", policy) == "x: (-len(set(x)"
    assert trim_suffix_overlap("x: (-len(set(x)), x))", "), x))[0]", "    return sorted(words, key=lambda ") == \
        "x: (-len(set(x)"


def test_between_two_statements_is_one_statement():
    text = "def f(items):\n    total = 0\n    \n    return total\n"
    policy = decide_policy(text, _at(2, 4, text), "python")
    assert policy.multiline
    assert check_text("for item in items:\n        total += item\n    total *= 2\n", policy).text == \
        "for item in items:\n        total += item"
    call = check_text("total = add(\n        total,\n    )\n    print(total)\n", policy)
    assert call.stop and call.text == "total = add(\n        total,\n    )"  # its closing bracket too


def test_after_a_block_opener_the_body_is_a_block():
    text = "def f(x):\n"
    policy = decide_policy(text, len("def f(x):"), "python")
    assert policy.multiline and policy.min_indent == 1


def test_braces_language_block():
    text = "function f(a) {\n  const b = 1;\n\n  return b;\n}\n"
    policy = decide_policy(text, _at(2, 0, text), "javascript")
    assert policy.multiline and policy.min_indent == 2


def test_unknown_language_falls_back_to_previous_line():
    text = "proc foo {} {\n    set a 1\n\n"
    policy = decide_policy(text, _at(2, 0, text), None)
    assert policy.multiline and policy.min_indent == 4


def test_single_line_stops_at_newline():
    policy = decide_policy(SOURCE, _at(4, 26), "python")
    check = check_text("2 * r\n        x", policy)
    assert check.stop and check.text == "2 * r" and check.reason == "end_of_line"
    assert not check_text("2 * r", policy).stop


def test_block_stops_at_dedent():
    policy = decide_policy(SOURCE, _at(5, 0), "python")
    generated = "        x = 1\n        y = 2\n    def other(self):\n"
    check = check_text(generated, policy)
    assert check.stop and check.reason == "dedent"
    assert check.text == "        x = 1\n        y = 2"


def test_block_stops_before_repeating_the_suffix():
    policy = decide_policy(SOURCE, _at(5, 0), "python")
    check = check_text("        total += 1\n        return total\n", policy)
    assert check.stop and check.reason == "reached_suffix"
    assert check.text == "        total += 1"


def test_block_keeps_a_needed_closing_brace():
    text = "function f(a) {\n"
    policy = decide_policy(text, len(text) - 1, "javascript")
    check = check_text("\n  return a;\n}\n", policy)
    assert check.stop and check.text == "\n  return a;\n}"


def test_block_closed_below_does_not_get_a_second_brace():
    text = "function f(a) {\n  \n  return a;\n}\n"
    policy = decide_policy(text, text.index("  \n") + 2, "javascript")
    check = check_text("log(a);\n}\n", policy)
    assert check.stop and check.text == "log(a);"


def test_top_level_block_is_one_statement():
    text = "import os\n\n"
    policy = decide_policy(text, len(text), "python")
    assert policy.multiline and policy.min_indent == 0
    check = check_text("def f():\n    return 1\n\ndef g():\n", policy)
    assert check.stop and check.reason == "next_statement"
    assert finalize(check.text, policy) == "def f():\n    return 1"


def test_max_lines():
    policy = decide_policy("def f():\n    ", len("def f():\n    "), "python", max_lines=3)
    check = check_text("a\n    b\n    c\n    d\n", policy)
    assert check.stop and check.reason == "max_lines"
    assert check.text == "a\n    b\n    c"


def test_trim_suffix_overlap():
    assert trim_suffix_overlap("a + b)", ")") == "a + b"
    assert trim_suffix_overlap("x):", "):") == "x"
    assert trim_suffix_overlap("value", ")") == "value"
    assert trim_suffix_overlap("f(x)", "") == "f(x)"


def test_single_line_stops_where_the_rest_of_the_line_is_retyped():
    text = "print(greet())\n"
    policy = decide_policy(text, len("print(greet("), "python")
    assert check_text("))  # Output: hi", policy).text == ""
    assert check_text('"Bob"))', policy).text == '"Bob"'
    assert check_text('f(x)', policy).stop is False  # "))" not reached yet
    check = check_text('f(x)))', policy)
    assert check.stop and check.reason == "reached_suffix" and check.text == "f(x)"


def test_a_hole_across_a_line_end_is_filled_where_the_model_leads_into_the_code_after_it():
    text = "def f(numbers):\n    result = []\n    for n in numbers:\n        relt.append(0)\n"
    cursor = text.index("relt") + 2
    policy = decide_policy(text, cursor, "python")
    assert policy.past_line_end and not policy.multiline
    check = check_text("sult.append(n)\n        result.append(0)", policy)  # retypes "lt.append(0)"
    assert check.stop and check.reason == "reached_suffix" and check.text == "sult.append(n)\n        resu"
    assert check_text("sult.append(n)\n        x = 1\n        y = 2\n        z", policy).text == "sult.append(n)"
    ended = "sult.append(n)\n        resu"
    assert finalize(ended, policy, "eos") == ended  # the model ended the middle itself
    assert finalize(ended, policy, "time_budget") == "sult.append(n)"


def test_a_block_cut_short_loses_its_unfinished_last_line():
    text = "def f(x):\n    \n"
    policy = decide_policy(text, len("def f(x):\n    "), "python")
    cut = "if x:\n        return 1\n    if x =="
    assert finalize(cut, policy, "time_budget") == "if x:\n        return 1"
    assert finalize(cut, policy, "max_lines") == cut


def test_finalize_single_line_trims_repeated_suffix():
    text = "print(fib())\n"
    policy = decide_policy(text, len("print(fib("), "python")
    assert finalize("10))", policy) == "10"


@given(st.text(alphabet=" \nabc:(){}", max_size=80), st.integers(0, 40))
def test_stop_text_is_always_a_prefix_of_generated(generated, cursor_seed):
    text = SOURCE
    cursor = cursor_seed * len(text) // 40
    policy = decide_policy(text, cursor, "python")
    check = check_text(generated, policy)
    assert generated.startswith(check.text)
    final = finalize(check.text, policy)
    if not policy.multiline:  # past the line end only with code right of the cursor, a few lines
        assert final.count("\n") <= (2 if policy.past_line_end else 0)
    assert "\n" not in finalize(check.text, policy, "time_budget").strip("\n") or policy.multiline
