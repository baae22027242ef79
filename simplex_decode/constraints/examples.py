"""The JSON schemas and patterns the tests, the evaluation and the benchmark use.

Three schemas (a flat object with typed fields, a nested object with an enum and an array, a
list of objects), the list with unbounded numbers, and three patterns (an ISO date, an e-mail address, a signed decimal), each
with the instruction the evaluation gives SmolLM2-135M-Instruct.
"""

from __future__ import annotations

__all__ = ["SCHEMAS", "PATTERNS", "PROMPTS"]

_NAME = {"type": "string", "pattern": "^[A-Za-z][A-Za-z .'-]{0,23}$"}  # ASCII, at most 24 characters

#: name -> JSON schema. Every field is bounded (strings by a pattern, integers by outlines-core's
#: ``maxDigits``, arrays by ``maxItems``), so every language is finite and
#: ``Automaton.max_tokens`` bounds the completion; ``points_number`` is ``points`` with unbounded
#: JSON numbers, kept to show what an infinite language costs (a small model can loop on digits).
SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": _NAME,
            "age": {"type": "integer", "maxDigits": 3},
            "height_cm": {"type": "integer", "maxDigits": 3},
            "is_student": {"type": "boolean"},
        },
        "required": ["name", "age", "height_cm", "is_student"],
    },
    "order": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "maxDigits": 6},
            "status": {"enum": ["pending", "shipped", "delivered", "cancelled"]},
            "customer": {"type": "object", "properties": {"name": _NAME, "city": _NAME}, "required": ["name", "city"]},
            "items": {"type": "array", "items": {"type": "string", "pattern": "^[a-z][a-z ]{0,15}$"},
                      "minItems": 1, "maxItems": 3},
        },
        "required": ["id", "status", "customer", "items"],
    },
    "points": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"label": {"type": "string", "pattern": "^[A-Za-z0-9 ]{1,12}$"},
                           "x": {"type": "integer", "maxDigits": 4}, "y": {"type": "integer", "maxDigits": 4}},
            "required": ["label", "x", "y"],
        },
        "minItems": 1,
        "maxItems": 3,
    },
    "points_number": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"label": {"type": "string", "pattern": "^[A-Za-z0-9 ]{1,12}$"},
                           "x": {"type": "number"}, "y": {"type": "number"}},
            "required": ["label", "x", "y"],
        },
        "minItems": 1,
        "maxItems": 3,
    },
}

_YEAR = r"([0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"  # 0001-9999
_LEAP_YEAR = r"([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"

#: name -> regular expression (the output must match it in full). ``iso_date`` matches
#: exactly the calendar dates YYYY-MM-DD of years 0001-9999 (leap years included).
PATTERNS = {
    "iso_date": rf"{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29",
    "email": r"[a-z0-9._%+-]{1,24}@[a-z0-9-]{1,16}(\.[a-z0-9-]{1,16}){0,2}\.[a-z]{2,6}",
    "signed_decimal": r"[+-][0-9]{1,6}\.[0-9]{1,4}",
}

#: name -> the user message of the chat prompt the evaluation uses
PROMPTS = {
    "person": "Describe a fictional university student as JSON with the fields name, age, height_cm and is_student.",
    "order": "Write a JSON record for an online order: id, status, customer (name and city) and the list of items.",
    "points": "Give a JSON list of two or three labelled points in the plane, each with label, x and y.",
    "points_number": "Give a JSON list of two or three labelled points in the plane, each with label, x and y.",
    "iso_date": "On what date did the first person walk on the Moon? Answer with the date only.",
    "email": "Make up an e-mail address for a bakery called Sunrise Breads. Answer with the address only.",
    "signed_decimal": "What is the temperature change in degrees Celsius from 21.5 to 18.25? Answer with a signed number.",
}
