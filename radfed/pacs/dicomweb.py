"""DICOMweb I/O with the clinic's PACS: store (STOW-RS), search (QIDO-RS), retrieve (WADO-RS).

Thin wrappers over dicomweb-client, for one reason: a clinic's operator should see one
line that names the server and the fix ("cannot reach the DICOMweb server at
http://pacs:8042/dicom-web ...: check the URL and that the server is running"), not a
requests traceback.  They also keep patient data out of messages and logs:

- a message names the server by scheme, host, port and path only: never credentials,
  query strings (a QIDO query can carry a Patient ID) nor the server's reply body;
- the underlying exception is not chained (its text quotes the full request URL);
- dicomweb-client's own INFO/DEBUG lines (which quote query strings and UIDs) are
  silenced: its logger is set to WARNING.

Authentication and TLS belong to the caller's :class:`requests.Session` (``auth``,
``verify``, ``cert``), passed as `session`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from urllib.parse import urlsplit

import requests
import retrying
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DicomWebError",
    "retrieve_series",
    "retrieve_study",
    "safe_url",
    "search_series",
    "search_studies",
    "store_instances",
]

DEFAULT_TIMEOUT_S = 30.0
# dicomweb-client retries a refused connection and 429/503/504 replies with exponential
# back-off; its default (5 attempts, 2-16 s apart) keeps an operator waiting half a minute
# for "server down".  Three attempts 0.5 s and 1 s apart ride out a restart.
RETRY_ATTEMPTS = 3
RETRY_BASE_MS = 250

logging.getLogger("dicomweb_client").setLevel(logging.WARNING)


class DicomWebError(RuntimeError):
    """A DICOMweb request failed; the message is one line with the server and the fix."""


def safe_url(url: str) -> str:
    """`url` without credentials, query or fragment: what messages may show."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:  # not a URL at all: show it without user:password@ or ?query
        return url.split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}".rstrip("/")


_HINTS = {
    HTTPStatus.BAD_REQUEST: "the server found the request malformed: check the URL is the DICOMweb root",
    HTTPStatus.UNAUTHORIZED: "the server wants credentials: configure them for this PACS",
    HTTPStatus.FORBIDDEN: "the server refused these credentials: check the account's rights on this PACS",
    HTTPStatus.NOT_FOUND: "nothing there: check the URL is the DICOMweb root (e.g. http://pacs:8042/dicom-web)",
    HTTPStatus.METHOD_NOT_ALLOWED: "the URL is not a DICOMweb service: check it is the DICOMweb root",
    HTTPStatus.NOT_ACCEPTABLE: "the server cannot send this media type or transfer syntax",
    HTTPStatus.CONFLICT: "the server refused the instances (e.g. a UID already stored with other content)",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "the request is too large for the server: store fewer instances at a time",
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "the server does not accept application/dicom here: check the URL"
    " is the DICOMweb root",
}


def _http_hint(status: int, action: str) -> str:
    """What to do about an HTTP status, in a few words."""
    if status == HTTPStatus.NOT_FOUND and "retrieve" in action:
        return _HINTS[HTTPStatus.NOT_FOUND] + " and that the server holds what was asked for"
    try:
        return _HINTS[HTTPStatus(status)]
    except (KeyError, ValueError):
        if status >= 500:
            return "the server failed: see the PACS's log"
        return "see the PACS's log"


def _http_failure(shown: str, action: str, response: requests.Response | None) -> DicomWebError:
    """A DicomWebError for an HTTP error reply (status and reason only, never the body)."""
    if response is None:
        return DicomWebError(f"the DICOMweb server at {shown} answered {action} with an HTTP error: see the PACS's log")
    status, reason = response.status_code, (response.reason or "").strip()
    return DicomWebError(
        f"the DICOMweb server at {shown} answered {action} with HTTP {status} {reason}: {_http_hint(status, action)}"
    )


@contextmanager
def _errors(url: str, action: str) -> Iterator[None]:
    """Turn requests' and dicomweb-client's exceptions into one-line DicomWebErrors."""
    shown = safe_url(url)
    try:
        yield
    except requests.exceptions.SSLError:
        raise DicomWebError(
            f"TLS with the DICOMweb server at {shown} failed ({action}): check its certificate "
            "and the CA this machine trusts"
        ) from None
    except requests.exceptions.Timeout:
        raise DicomWebError(
            f"the DICOMweb server at {shown} did not answer {action} in time: check it is running "
            "and not overloaded, or allow a longer timeout"
        ) from None
    except requests.exceptions.ConnectionError:
        raise DicomWebError(
            f"cannot reach the DICOMweb server at {shown} ({action}): check the URL and that the "
            "server is running and reachable from this machine"
        ) from None
    except requests.exceptions.HTTPError as exc:
        raise _http_failure(shown, action, exc.response) from None
    except retrying.RetryError as exc:  # a retriable status (429, 503, 504) to the last attempt
        last = exc.last_attempt
        response = None if last.has_exception else last.value
        raise _http_failure(shown, action, response if isinstance(response, requests.Response) else None) from None
    except requests.exceptions.RequestException as exc:
        raise DicomWebError(
            f"{action} at the DICOMweb server at {shown} failed ({type(exc).__name__}): check the URL"
        ) from None
    except (ValueError, TypeError, KeyError):  # a reply that does not parse as DICOMweb (HTML, other JSON)
        raise _not_dicomweb(shown, action) from None


def _not_dicomweb(shown: str, action: str) -> DicomWebError:
    """The server answered, but not in DICOMweb: usually the URL is not the DICOMweb root."""
    return DicomWebError(
        f"the server at {shown} answered {action} with something that is not DICOMweb: "
        "check the URL is the DICOMweb root (e.g. http://pacs:8042/dicom-web)"
    )


def _client(url: str, session: requests.Session | None, timeout: float) -> DICOMwebClient:
    """A dicomweb-client for the DICOMweb root `url`, or a DicomWebError if it is no http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DicomWebError(
            f"'{safe_url(url)}' is not a DICOMweb URL: give the server's DICOMweb root, e.g. http://pacs:8042/dicom-web"
        )
    try:
        client = DICOMwebClient(url=url.rstrip("/"), session=session, timeout=timeout)
    except ValueError:
        raise DicomWebError(
            f"'{safe_url(url)}' is not a DICOMweb URL: give the server's DICOMweb root, e.g. http://pacs:8042/dicom-web"
        ) from None
    client.set_http_retry_params(max_attempts=RETRY_ATTEMPTS, wait_exponential_multiplier=RETRY_BASE_MS)
    return client


def _datasets(results: object) -> list[Dataset]:
    """QIDO-RS DICOM JSON results as pydicom Datasets (raises ValueError on anything else)."""
    if not isinstance(results, list) or not all(isinstance(result, dict) for result in results):
        raise ValueError("not a DICOM JSON array")
    return [Dataset.from_json(result) for result in results]


def store_instances(
    url: str,
    datasets: Sequence[Dataset],
    *,
    session: requests.Session | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Dataset:
    """STOW-RS `datasets` to the DICOMweb root `url`; returns the server's reply.

    Raises DicomWebError when the server is unreachable, answers an HTTP error or lists
    any instance as failed (a partial store is a failure: the caller must know).
    """
    datasets = list(datasets)
    if not datasets:
        return Dataset()
    for number, ds in enumerate(datasets, start=1):
        if "TransferSyntaxUID" not in getattr(ds, "file_meta", Dataset()):
            raise ValueError(
                f"instance {number} of {len(datasets)} has no file meta Transfer Syntax UID: "
                "give datasets read with pydicom.dcmread or made by radfed.pacs"
            )
    client = _client(url, session, timeout)
    with _errors(url, "STOW-RS"):
        reply = client.store_instances(datasets=datasets)
    failed = list(reply.get("FailedSOPSequence", []) if reply is not None else [])
    if failed:
        reasons = sorted({f"0x{int(item.get('FailureReason', 0)):04X}" for item in failed})
        raise DicomWebError(
            f"the DICOMweb server at {safe_url(url)} refused {len(failed)} of {len(datasets)} "
            f"instances (failure reasons {', '.join(reasons)}): see the PACS's log"
        )
    return reply if reply is not None else Dataset()


def search_studies(
    url: str,
    *,
    filters: Mapping[str, str] | None = None,
    fields: Sequence[str] = (),
    limit: int | None = None,
    session: requests.Session | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Dataset]:
    """QIDO-RS studies matching `filters` (keyword -> value, e.g. {"PatientID": "…"})."""
    client = _client(url, session, timeout)
    with _errors(url, "QIDO-RS study search"):
        results = client.search_for_studies(
            search_filters=dict(filters or {}), fields=list(fields) or None, limit=limit
        )
        return _datasets(results)


def search_series(
    url: str,
    study_uid: str,
    *,
    filters: Mapping[str, str] | None = None,
    fields: Sequence[str] = (),
    limit: int | None = None,
    session: requests.Session | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Dataset]:
    """QIDO-RS series of study `study_uid` matching `filters` (e.g. {"Modality": "SR"})."""
    client = _client(url, session, timeout)
    with _errors(url, "QIDO-RS series search"):
        results = client.search_for_series(
            study_instance_uid=study_uid, search_filters=dict(filters or {}), fields=list(fields) or None, limit=limit
        )
        return _datasets(results)


def retrieve_study(
    url: str,
    study_uid: str,
    *,
    session: requests.Session | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Dataset]:
    """WADO-RS every instance of study `study_uid`."""
    client = _client(url, session, timeout)
    with _errors(url, "WADO-RS study retrieve"):
        return list(client.retrieve_study(study_instance_uid=study_uid))


def retrieve_series(
    url: str,
    study_uid: str,
    series_uid: str,
    *,
    session: requests.Session | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Dataset]:
    """WADO-RS every instance of series `series_uid` of study `study_uid`."""
    client = _client(url, session, timeout)
    with _errors(url, "WADO-RS series retrieve"):
        return list(client.retrieve_series(study_instance_uid=study_uid, series_instance_uid=series_uid))
