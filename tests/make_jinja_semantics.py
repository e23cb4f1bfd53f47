#!/usr/bin/env python3
"""Generate tests/fixtures/jinja_semantics.json: small templates rendered by transformers' chat-template
environment (Jinja2 sandbox with trim_blocks, lstrip_blocks, loop controls, transformers' tojson,
raise_exception and strftime_now), to pin the Python/Jinja2 behaviours a Rust renderer must copy.

Run from the repository root:  /work/venv/bin/python tests/make_jinja_semantics.py
Each case: {"template", "vars", "expected_text" or null, "expected_error" or null}. `vars` always holds a
one-message `messages` list so that the case can go through a chat-template renderer unchanged.
"""

import json
from pathlib import Path

from transformers.utils.chat_template_utils import _compile_jinja_template

MESSAGES = [{"role": "user", "content": "hi"}]

CASES = [
    # printing Python values
    ("{{ [1, 'a', none, true] }}", {}),
    ("{{ {'b': 1, 'a': [2.5, 'x']} }}", {}),
    ("{{ d }}|{{ d.items()|list }}", {"d": {"z": 1, "a": "it's"}}),
    ("{{ true }} {{ false }} {{ none }} {{ 1.0 }} {{ 1e20 }} {{ 0.1 + 0.2 }} {{ 7 // 2 }} {{ 7 / 2 }}", {}),
    ("{{ undefined_var }}|{{ undefined_var is defined }}|{{ undefined_var|length }}", {}),
    ("{{ 'a\\nb'|string }}|{{ [\"q'uote\"]|string }}", {}),
    # tojson
    ("{{ v|tojson }}", {"v": {"s": "<a href='x'>&</a>", "u": "é😀", "n": None, "f": 1.5, "i": 3, "e": [], "o": {}}}),
    ("{{ v|tojson(indent=2) }}", {"v": {"a": [1, {"b": None}], "c": "x"}}),
    ("{{ v|tojson(indent=2, sort_keys=true) }}", {"v": {"b": 1, "a": 2}}),
    ("{{ v|tojson(ensure_ascii=true) }}", {"v": "é😀\u0001"}),
    ("{{ v|tojson(separators=(',', ':')) }}", {"v": {"a": [1, 2]}}),
    # strings (pycompat)
    ("{{ '  x y  '.strip() }}|{{ 'a,b,,c'.split(',') }}|{{ 'a b  c'.split() }}|{{ 'Hello'.startswith('He') }}", {}),
    ("{{ 'hello world'.title() }}|{{ 'ABC'.lower() }}|{{ 'x'.upper() }}|{{ 'aXa'.replace('a', 'b') }}", {}),
    ("{{ 'abc'[1:] }}|{{ 'abc'[::-1] }}|{{ 'ab' * 3 }}|{{ '-' * 0 }}", {}),
    ("{{ d.get('a') }}|{{ d.get('zz') }}|{{ d.get('zz', 'dflt') }}|{{ 'a' in d }}|{{ d.keys()|list }}", {"d": {"a": 1}}),
    # filters
    ("{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(4, first=true) }}|{{ 'a\\n\\nb'|indent(2, blank=true) }}", {}),
    ("{{ '  x  '|trim }}|{{ none|default('d') }}|{{ ''|default('d', true) }}|{{ u|default('u') }}", {}),
    ("{{ xs|join(', ') }}|{{ xs|length }}|{{ xs|first }}|{{ xs|last }}|{{ xs|reverse|list }}", {"xs": ["a", "b", "c"]}),
    ("{{ xs|map(attribute='n')|list }}|{{ xs|selectattr('n', 'equalto', 2)|list }}", {"xs": [{"n": 1}, {"n": 2}]}),
    ("{{ xs|map(attribute='n')|tojson }}", {"xs": [{"n": 1}]}),
    ("{{ xs|select|list|length }}", {"xs": [0, 1, 2]}),
    ("{% for k, v in d|items %}{{ k }}={{ v }};{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("{{ d|dictsort }}", {"d": {"b": 1, "a": 2}}),
    # tests
    ("{{ 'x' is string }}{{ 'x' is sequence }}{{ d is sequence }}{{ d is mapping }}{{ 1 is number }}", {"d": {}}),
    ("{{ 'x' is iterable }}{{ 1 is iterable }}{{ none is none }}{{ u is none }}{{ u is undefined }}", {}),
    # control flow
    ("{% for x in xs %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{{ ',' if not loop.last }}{% endfor %}", {"xs": [1, 2, 3, 4, 5]}),
    ("{% set ns = namespace(n=0) %}{% for x in xs %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}", {"xs": [1, 2, 3]}),
    ("{% for x in xs %}{{ loop.index }}/{{ loop.length }}{{ loop.first }}{% endfor %}", {"xs": ["a", "b"]}),
    ("{% for m in messages[1:] %}x{% else %}empty{% endfor %}", {}),
    ("{% for x in none_value %}{{ x }}{% endfor %}", {"none_value": None}),
    ("{% macro f(a, b='B') %}[{{ a }}{{ b }}]{% endmacro %}{{ f(1) }}{{ f(1, b=2) }}", {}),
    # whitespace control with trim_blocks / lstrip_blocks
    ("<\n  {% if true %}\n  yes\n  {% endif %}\n>\n", {}),
    ("a  {%- if true -%}  b  {%- endif -%}  c", {}),
    ("{% for x in xs %}\n{{ x }}\n{% endfor %}\n", {"xs": [1, 2]}),
    # more printing and operators
    ("{{ m.content }}", {"m": {"content": [{"type": "text", "text": "hi"}]}}),
    ("{{ 'a' ~ 1 ~ true ~ none }}|{{ [1, true, none]|join(',') }}", {}),
    ("{{ -7 // 2 }} {{ 10 % 3 }} {{ 2 ** 10 }} {{ -1.5|abs }} {{ 3.0|int }} {{ '5'|int + 1 }} {{ 2.5|round }}", {}),
    ("{{ range(3)|list }}|{{ xs[-1] }}|{{ xs[1:]|length }}|{{ (xs + ['d'])|length }}|{{ (xs + ['d'])|tojson }}",
     {"xs": ["a", "b", "c"]}),
    ("{{ 'x' if u }}|{{ 'a' in ['a'] }}|{{ d['missing'] is defined }}|{{ d|length }}", {"d": {"k": 1}}),
    ("{% for k in d %}{{ k }}{% endfor %}|{{ d.items()|list|tojson }}", {"d": {"b": 1, "a": 2}}),
    ("{{ '%s - %s'|format(1, 'x') }}|{{ '{} and {}'.format(1, 'x') }}", {}),
    ("{{ 'abc'|upper|replace('B', 'x') }}|{{ '😀é'|length }}|{{ 'a\tb'|replace('\t', ' ') }}", {}),
    ("{{ xs|unique|list }}|{{ xs|map('upper')|join }}|{{ xs|unique|list|length }}", {"xs": ["a", "b", "a"]}),
    ("{{ 'abc'.startswith(('x', 'a')) }}|{{ 'a-b-c'.rsplit('-', 1) }}|{{ 'xab'.removeprefix('x') }}|{{ 'a  b '.rsplit(None, 1) }}", {}),
    ("{% for x in xs %}{{ loop.previtem }}>{{ x }};{% endfor %}", {"xs": [1, 2]}),
    ("{{ '  a  '.rstrip() }}|{{ 'xxa'.lstrip('x') }}|{{ 'a b'.split(' ', 1) }}|{{ 'A'.isupper() }}", {}),
    ("{{ n }}|{{ f }}|{{ big }}|{{ neg }}", {"n": 12345678901234, "f": 0.000012, "big": 1.5e300, "neg": -0.0}),
    # errors
    ("{{ raise_exception('bad ' ~ 'input') }}", {}),
    ("{{ 'a' + d }}", {"d": {}}),
    ("{{ none_value|length }}", {"none_value": None}),
    ("{{ u.attr }}", {}),
    ("{{ strftime_now('%Y-%m-%d %H:%M / %d %b %Y / %A %B %-d %I%p %j') }}", {}),
]


def main() -> None:
    from transformers.utils import chat_template_utils
    import datetime as dt

    frozen = dt.datetime(2024, 7, 26, 12, 0, 0)

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return frozen

    chat_template_utils.datetime = Frozen
    out = []
    for template, variables in CASES:
        variables = {"messages": MESSAGES, **variables}
        try:
            text, error = _compile_jinja_template(template).render(**variables), None
        except Exception as exc:  # noqa: BLE001 -- the failure is the expected result
            text, error = None, str(exc)
        out.append({"template": template, "vars": variables, "expected_text": text, "expected_error": error})
    path = Path(__file__).resolve().parent / "fixtures" / "jinja_semantics.json"
    path.write_text(json.dumps({"now": frozen.isoformat(), "cases": out}, ensure_ascii=False, indent=1) + "\n",
                    encoding="utf-8")
    print(f"wrote {len(out)} cases to {path}")


if __name__ == "__main__":
    main()
