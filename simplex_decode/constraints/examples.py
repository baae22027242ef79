"""The JSON schemas and patterns the tests, the evaluation and the benchmark use.

Three schemas (a flat object with typed fields, a nested object with an enum and an array, a
list of objects) and three patterns (an ISO date, an e-mail address, a signed decimal), each
with the instruction the evaluation gives SmolLM2-135M-Instruct.
"""

from __future__ import annotations

__all__ = ["SCHEMAS", "PATTERNS", "PROMPTS"]

#: name -> JSON schema
SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer"},
            "height_m": {"type": "number"},
            "is_student": {"type": "boolean"},
        },
        "required": ["name", "age", "height_m", "is_student"],
    },
    "order": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "status": {"enum": ["pending", "shipped", "delivered", "cancelled"]},
            "customer": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 24}, "city": {"type": "string", "maxLength": 24}},
                "required": ["name", "city"],
            },
            "items": {"type": "array", "items": {"type": "string", "maxLength": 16}, "minItems": 1, "maxItems": 3},
        },
        "required": ["id", "status", "customer", "items"],
    },
    "points": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"label": {"type": "string", "maxLength": 12}, "x": {"type": "number"}, "y": {"type": "number"}},
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
    "person": "Describe a fictional university student as JSON with the fields name, age, height_m and is_student.",
    "order": "Write a JSON record for an online order: id, status, customer (name and city) and the list of items.",
    "points": "Give a JSON list of two or three labelled points in the plane, each with label, x and y.",
    "iso_date": "On what date did the first person walk on the Moon? Answer with the date only.",
    "email": "Make up an e-mail address for a bakery called Sunrise Breads. Answer with the address only.",
    "signed_decimal": "What is the temperature change in degrees Celsius from 21.5 to 18.25? Answer with a signed number.",
}
