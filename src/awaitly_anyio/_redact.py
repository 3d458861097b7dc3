"""The one place that takes secrets out of URLs and DSNs before they reach any text.

Every message, ``repr``, error, health answer, span status or Sentry event that
could carry a store or Redis URL passes it through `redact_url` (a URL on
its own) or `redact_text` (free text that may contain URLs or DSNs).

What is masked (replaced by ``***``):

- the password in the userinfo part (``scheme://user:PASSWORD@host``), and a
  userinfo with no ``:`` at all when the scheme's clients read it as a password
  (``redis://TOKEN@host``);
- the value of every query or key/value parameter whose name looks like a
  secret (``password``, ``passwd``, ``pwd``, ``secret``, ``token``, ``apikey``, ``*_key``,
  ``auth`` ..., in any case, anywhere in the name: ``sslpassword``,
  ``api_key``, ``access_token``);
- in libpq key/value DSNs (``host=db password=s3cret``) the same parameters, and
  in mapping reprs or JSON (``{'password': 's3cret'}``) the same keys;
- a ``user:password@`` without a scheme (``u:s3cret@db:5432``), or after a
  scheme missing its slashes (``postgresql:/u:s3cret@db``).

A password may hold characters a valid URL would percent-encode (``/``, ``?``,
``#``, ``@``, even spaces in `redact_url`): everything up to the last ``@``
is taken as the userinfo, so a sloppy URL is masked too.  When in doubt, more
is masked rather than less (``host:5432/db?app=a@b`` loses its port and path).
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact_text", "redact_url"]

MASK = "***"

# A parameter name that looks like it holds a secret (bounded, so that a long word
# costs linear time).
_SECRET_NAME = (
    r"[A-Za-z0-9_.\-]{0,40}(?:pass(?:word|wd)?|pwd|secret|token|[_\-.]?api[_\-.]?key|[_\-.]key"
    r"|auth|credential)[A-Za-z0-9_.\-]{0,40}"
)

# scheme://user:password@  (the scheme's slashes may be missing or short).  The password
# may hold anything but whitespace: a valid URL writes '@', '/', '?' and '#' in a
# password percent-encoded, but a sloppy one does not, so it runs to the last '@' of
# the word.
_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.\-])(?P<head>[A-Za-z][A-Za-z0-9+.\-]*:/*)(?P<user>[^:/?#@\s]*)(?P<colon>:)(?P<pw>\S*)@"
)
# user:password@host without a scheme (what is left once the schemes are handled).
_BARE_PAIR = re.compile(
    r"(?<![\w%.+\-~])(?P<user>[\w%.+\-~]+):(?P<pw>[^\s@/][^\s@]*)@(?=[\w\[.\-%])"
)
# redis://TOKEN@host: redis clients take a userinfo without ':' as the password.
_BARE_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.\-])(?P<head>(?:redis|rediss|unix)://)(?P<pw>[^:/?#@\s]+)@", re.I
)
# ?password=...&  or  ;password=...  in a URL query
_QUERY_PARAM = re.compile(rf"(?P<name>[?&;]{_SECRET_NAME}=)(?P<value>[^&;#\s]*)", re.I)
# password=... or password='...' in a libpq key/value DSN (start of text or after a space)
_KV_PARAM = re.compile(
    rf"(?P<name>(?:^|(?<=[\s,(])){_SECRET_NAME}\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s'&;]+)",
    re.I,
)
# 'password': 'value' or "password": "value" in a mapping's repr or in JSON
_MAPPING_ITEM = re.compile(
    rf"(?P<name>(?P<q>['\"]){_SECRET_NAME}(?P=q)\s*:\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")",
    re.I,
)
# The start of a URL: its scheme and slashes.
_HEAD = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.\-]*:/*")
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def redact_text(text: str) -> str:
    """``text`` with every secret in the URLs and DSNs it holds replaced by ``***``.

    Safe on any text: words that are not part of a URL or DSN are left alone,
    except ``name=value`` pairs whose name looks like a secret.
    """
    if not text:
        return text
    if "@" in text:
        text = _USERINFO.sub(lambda m: f"{m['head']}{m['user']}:{MASK}@", text)
        text = _BARE_USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)
        text = _BARE_PAIR.sub(lambda m: f"{m['user']}:{MASK}@", text)
    if "=" in text:
        text = _QUERY_PARAM.sub(lambda m: f"{m['name']}{MASK}", text)
        text = _KV_PARAM.sub(lambda m: f"{m['name']}{MASK}", text)
    if ":" in text:
        text = _MAPPING_ITEM.sub(lambda m: f"{m['name']}{m['q']}{MASK}{m['q']}", text)
    return text


def redact_url(url: object) -> str:
    """A URL or DSN as text that is safe to show: ``str(url)`` through `redact_text`.

    Anything that is not a string is shown by its type only (a caller handing a
    bytes URL or an object must not leak it through its ``repr``).
    """
    if not isinstance(url, str):
        return f"<{type(url).__name__}>"
    return redact_text(_mask_userinfo(url))


def _mask_userinfo(url: str) -> str:
    """``url`` (one URL, however malformed) with the password of its userinfo masked:
    everything between the first ``:`` after the scheme and the last ``@``, spaces
    included; a Redis userinfo without ``:`` is the password entirely."""
    at = url.rfind("@")
    if at < 0:
        return url
    head = _HEAD.match(url)
    start = head.end() if head is not None else 0
    userinfo = url[start:at]
    user, colon, _ = userinfo.partition(":")
    if colon:
        return f"{url[:start]}{user}:{MASK}{url[at:]}"
    scheme = url[:start].strip().split(":", 1)[0].lower()
    if scheme in _REDIS_SCHEMES and userinfo:
        return f"{url[:start]}{MASK}{url[at:]}"
    return url
