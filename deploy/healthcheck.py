"""Container health check of the gateway: exit 0 when ``/readyz`` answers 200, 1 otherwise.

It reads the port (and whether TLS is on) from the same ``GatewaySettings`` the gateway uses, so
a changed ``NEWSCLF_HTTP_PORT`` cannot leave the check probing the wrong port. Ready means every
model is loaded and answers, which is what a load balancer or ``depends_on`` should wait for.

Usage: ``python healthcheck.py [PATH]`` (default ``/readyz``; ``/healthz`` checks liveness only).
"""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

from service.settings import GatewaySettings

TIMEOUT_S = 4.0


def probe_url(settings: GatewaySettings, path: str) -> str:
    scheme = "https" if settings.tls_cert is not None and settings.tls_key is not None else "http"
    return f"{scheme}://127.0.0.1:{settings.http_port}{path}"


def check(url: str) -> tuple[bool, str]:
    # The certificate names the public host, not 127.0.0.1; this only asks the local process.
    context = ssl._create_unverified_context() if url.startswith("https") else None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=context) as response:
            return response.status == 200, f"{response.status} {response.read(300).decode(errors='replace')}"
    except urllib.error.HTTPError as exc:
        return False, f"{exc.code} {exc.read(300).decode(errors='replace')}"
    except OSError as exc:
        return False, str(exc)


def main(argv: list[str]) -> int:
    url = probe_url(GatewaySettings(), argv[0] if argv else "/readyz")
    ok, detail = check(url)
    print(f"{url}: {detail}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
