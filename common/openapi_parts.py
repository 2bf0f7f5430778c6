"""Schema pieces both OpenAPI documents share: names and paths as common/paths.py accepts them.

The server's rules are the truth (``check_username``, ``parse_path``); these patterns
describe them for clients and fuzzers. A path segment's pattern is narrower than the rule
(printable ASCII and Latin-1, at most 63 characters): the rule also wants Unicode NFC,
assigned characters and at most 255 UTF-8 bytes, which no regular expression says well.
``nodes/openapi.json`` spells the same patterns; ``test_openapi_fuzz.py`` checks they agree.
"""
from .paths import EMAIL_RE, MAX_EMAIL_LENGTH, USERNAME_RE

USERNAME_PATTERN = USERNAME_RE.pattern
_CHAR = "[ !-.0-\\[\\]-~\u00a1-\u00ac\u00ae-\u00ff]"
_SEGMENT = f"(?!\\.\\.?(?:/|$)){_CHAR}{{1,63}}"
FILE_PATTERN = f"^{_SEGMENT}(?:/{_SEGMENT}){{0,63}}$"
PATH_OR_FOLDER_PATTERN = f"^{_SEGMENT}(?:/{_SEGMENT}){{0,63}}/?$"
OWNER_PATH_PATTERN = f"^[a-z][a-z0-9_-]{{0,31}}(?:/{_SEGMENT}(?:/{_SEGMENT}){{0,63}})?/?$"
FOLDER_PATTERN = f"^(?:[a-z][a-z0-9_-]{{0,31}}(?:/(?:{_SEGMENT}/){{0,63}})?)?$"
EMAIL_PATTERN = EMAIL_RE.pattern
PATH_MAX_LENGTH = 240  # characters; the rule is 1024 UTF-8 bytes with the owner

USERNAME = {"type": "string", "pattern": USERNAME_PATTERN,
            "description": "1-32 lower-case letters, digits, '-' or '_', starting with a letter"}
FILE_PATH = {"type": "string", "pattern": FILE_PATTERN, "maxLength": PATH_MAX_LENGTH}
PATH_OR_FOLDER = {"type": "string", "pattern": PATH_OR_FOLDER_PATTERN,
                  "maxLength": PATH_MAX_LENGTH}
FOLDER_PATH = {"type": "string", "pattern": FOLDER_PATTERN, "maxLength": PATH_MAX_LENGTH}
OWNER_PATH = {"type": "string", "pattern": OWNER_PATH_PATTERN, "maxLength": PATH_MAX_LENGTH}
EMAIL = {"type": "string", "pattern": EMAIL_PATTERN, "maxLength": MAX_EMAIL_LENGTH}
OBJECT = {"type": "object"}

ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}}}}}
ERROR_RESPONSE = {"description": "error: {\"error\": {\"code\", \"message\"}}",
                  "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def json_body(schema):
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def path_param(name, schema, description=""):
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description}


def query_param(name, schema, description, required=False):
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}
