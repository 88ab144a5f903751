"""The table of LiteLLM proxy log messages gatewatch recognises (a data table: one row per
message, with the LiteLLM version it was captured from), the sub-fields pulled out of them,
and LiteLLM's exception classes' HTTP statuses. agent/parse/logs.py does the parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LogPattern:
    """One recognised log message. `name` selects the handler `LogParser._on_<name>`."""

    name: str
    prefix: str  # the literal start of the message; dispatch uses its first DISPATCH_CHARS
    regex: re.Pattern[str]  # matched (re.match) against the message with ANSI codes removed
    seen_on: str  # LiteLLM version(s) whose logs contained this exact wording



def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.DOTALL)



# Order matters only inside a bucket of equal first characters (the more specific first).
PATTERNS: tuple[LogPattern, ...] = (
    LogPattern("selected", "get_available_deployment for model: ",
               _re(r"get_available_deployment for model: (?P<model_group>.+?), Selected deployment: (?P<body>.*)"),
               "1.108.7"),
    LogPattern("final_failure",
               "litellm.router.py::async_function_with_fallbacks() - Error occurred while trying to do fallbacks - ",
               _re(r"litellm\.router\.py::async_function_with_fallbacks\(\) - Error occurred while trying to do "
                   r"fallbacks - (?P<error>.*)"),  # then COOLDOWN_DEBUG splits off the cooldown list
               "1.108.7"),
    LogPattern("attempt", "litellm.",
               _re(r"litellm\.(?P<call>\w+)\(model=(?P<model>[^)]*)\) (?:(?P<ok>200 OK)|Exception (?P<error>.*))"),
               "1.108.7"),
    LogPattern("no_deployment", "No deployment found for model: ",
               _re(r"No deployment found for model: (?P<model_group>.+?), cooldown_list with debug info: "
                   r"(?P<cooldowns>.*)"),
               "1.108.7"),
    LogPattern("fallback_start", "Falling back to model_group = ",
               _re(r"Falling back to model_group = (?P<fallback_model>.+?)\s*\Z"), "1.108.7"),
    LogPattern("fallback_success", "Successful fallback b/w models", _re(r"Successful fallback b/w models"),
               "1.108.7"),
    LogPattern("asgi_exception", "Exception in ASGI application", _re(r"Exception in ASGI application"),
               "1.108.7 (uvicorn)"),
    LogPattern("litellm_bug", "This looks like a bug in LiteLLM", _re(r"This looks like a bug in LiteLLM"),
               "1.108.7"),
    LogPattern("startup_failed", "Application startup failed", _re(r"Application startup failed"),
               "1.108.7 (uvicorn)"),
)



# Pieces pulled out of a matched message (same versioning rule as PATTERNS).
FIELDS: dict[str, re.Pattern[Any]] = {  # str patterns, and bytes for the CRI wrapper
    # the router's repr of the selected deployment dict (1.108.7)
    "deployment_id": re.compile(r"'id': '([^']*)'"),
    "deployment_model": re.compile(r"'model': '([^']*)'"),
    "deployment_api_base": re.compile(r"'api_base': '([^']*)'"),
    # LiteLLM exception text (1.108.7)
    "litellm_error_class": re.compile(r"\blitellm\.([A-Z]\w*)"),  # "litellm.RateLimitError: ...", "litellm.Timeout"
    "error_class": re.compile(r"\b([A-Z][A-Za-z]*(?:Error|Exception))\b"),
    "retried": re.compile(r"LiteLLM Retried: (\d+) times"),
    "max_retries": re.compile(r"LiteLLM Max Retries: (\d+)"),
    "model_group": re.compile(r"model group '([^']+)'"),
    "passed_model": re.compile(r"Passed model=(.+?)\. pre-call-checks"),
    "cooldown_list": re.compile(r"cooldown_list=\[([^\]]*)\]"),
    "try_again": re.compile(r"Try again in (\d+(?:\.\d+)?) seconds"),
    "budget": re.compile(r"Exceeded budget for deployment model_name: (?P<model_group>[^,]+), litellm_params\.model: "
                         r"(?P<model>[^,]+), model_id: (?P<deployment>.+?): (?P<spend>[0-9.eE+-]+) >= (?P<period>\S+)"),
    # one entry of a cooldown debug list, when the list was cut and literal_eval fails
    "cooldown_entry": re.compile(r"\('([^'\\]+)', \{"),
    "cooldown_status": re.compile(r"'status_code': '?(\d+)'?"),
    "cooldown_timestamp": re.compile(r"'timestamp': ([0-9.eE+-]+)"),
    "cooldown_time": re.compile(r"'cooldown_time': ([0-9.eE+-]+)"),
    # the bug-report link LiteLLM prints after an internal error (1.108.7)
    "bug_exception": re.compile(r"Exception(?::\s|%3A\+)(?:`|%60)(\w+)(?:`|%60)"),
    # last "SomeError: ..." line of a traceback
    "traceback_class": re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Timeout|Warning))(?::|\s*$)",
                                  re.MULTILINE),
    # plain-text formats: LiteLLM's "%(asctime)s - %(name)s:%(levelname)s: %(filename)s:%(lineno)s - %(message)s"
    # and uvicorn's "LEVEL:     message"
    "plain_litellm": re.compile(r"^\S+ - [^:]+:[A-Z]+: \S+:\d+ -\s?(.*)$", re.DOTALL),
    "plain_uvicorn": re.compile(r"^[A-Z]+:\s+(.*)$", re.DOTALL),
    # CRI (containerd / CRI-O) log line wrapper: "<time> stdout F <line>"
    "cri": re.compile(rb"^\S+ (?:stdout|stderr) [FP] "),
}



# LiteLLM exception class -> HTTP status (litellm/exceptions.py, 1.108.7)
EXCEPTION_STATUS: dict[str, str] = {
    "BadRequestError": "400", "ContextWindowExceededError": "400", "ContentPolicyViolationError": "400",
    "InvalidRequestError": "400", "RejectedRequestError": "400", "UnsupportedParamsError": "400",
    "BudgetExceededError": "400", "PaymentRequiredError": "402", "AuthenticationError": "401",
    "PermissionDeniedError": "403", "NotFoundError": "404", "Timeout": "408", "APITimeoutError": "408",
    "UnprocessableEntityError": "422", "RateLimitError": "429", "RouterRateLimitError": "429",
    "InternalServerError": "500", "APIConnectionError": "500", "APIError": "500", "BadGatewayError": "502",
    "ServiceUnavailableError": "503",
}



COOLDOWN_DEBUG = "\nDebug Information:\nCooldown Deployments="  # ends the final failure message (1.108.7)



DISPATCH_CHARS = 8
