"""The one place that takes secrets out of URLs and DSNs before they reach any text.

Every message, ``repr``, error, health answer, span status or Sentry event that
could carry a store or Redis URL passes it through :func:`redact_url` (a URL on
its own) or :func:`redact_text` (free text that may contain URLs or DSNs).

What is masked (replaced by ``***``):

- the password in the userinfo part (``scheme://user:PASSWORD@host``), and a
  userinfo with no ``:`` at all when the scheme's clients read it as a password
  (``redis://TOKEN@host``);
- the value of every query or key/value parameter whose name looks like a
  secret (``password``, ``passwd``, ``pwd``, ``secret``, ``token``, ``apikey``, ``*_key``,
  ``auth`` ..., in any case, anywhere in the name: ``sslpassword``,
  ``api_key``, ``access_token``);
- in libpq key/value DSNs (``host=db password=s3cret``) the same parameters.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact_text", "redact_url"]

MASK = "***"

# A parameter name that looks like it holds a secret.
_SECRET_NAME = (
    r"[A-Za-z0-9_.\-]*(?:pass(?:word|wd)?|pwd|secret|token|[_\-.]?api[_\-.]?key|[_\-.]key"
    r"|auth|credential)[A-Za-z0-9_.\-]*"
)

# scheme://user:password@   (the password may hold anything but '@' and whitespace;
# a password with '@' in it is written %40 in a valid URL, but take the last '@'
# before the host to be safe with sloppy ones)
_USERINFO = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/?#@\s]*)(?P<colon>:)(?P<pw>[^\s/?#]*)@"
)
# redis://TOKEN@host: redis clients take a userinfo without ':' as the password.
_BARE_USERINFO = re.compile(r"(?P<head>(?:redis|rediss|unix)://)(?P<pw>[^:/?#@\s]+)@", re.I)
# ?password=...&  or  ;password=...  in a URL query
_QUERY_PARAM = re.compile(rf"(?P<name>[?&;]{_SECRET_NAME}=)(?P<value>[^&;#\s]*)", re.I)
# password=... or password='...' in a libpq key/value DSN (start of text or after a space)
_KV_PARAM = re.compile(
    rf"(?P<name>(?:^|(?<=\s)){_SECRET_NAME}\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s'&;]+)", re.I
)


def redact_text(text: str) -> str:
    """``text`` with every secret in the URLs and DSNs it holds replaced by ``***``.

    Safe on any text: words that are not part of a URL or DSN are left alone,
    except ``name=value`` pairs whose name looks like a secret.
    """
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}{m['user']}:{MASK}@", text)
    text = _BARE_USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)
    text = _QUERY_PARAM.sub(lambda m: f"{m['name']}{MASK}", text)
    return _KV_PARAM.sub(lambda m: f"{m['name']}{MASK}", text)


def redact_url(url: object) -> str:
    """A URL or DSN as text that is safe to show: ``str(url)`` through :func:`redact_text`.

    Anything that is not a string is shown by its type only (a caller handing a
    bytes URL or an object must not leak it through its ``repr``).
    """
    if not isinstance(url, str):
        return f"<{type(url).__name__}>"
    return redact_text(url)
