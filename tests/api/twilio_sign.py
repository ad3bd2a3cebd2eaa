"""Signs a webhook the way Twilio does, with the official SDK's RequestValidator.

Usage: twilio_sign.py AUTH_TOKEN URL < params.json   (params: a JSON object of form fields)
Prints the X-Twilio-Signature value. The Rust tests call this so that Haven's verifier is
checked against Twilio's own implementation, not against a copy of ours.
"""

import json
import sys

from twilio.request_validator import RequestValidator

token, url = sys.argv[1], sys.argv[2]
params = json.load(sys.stdin)
validator = RequestValidator(token)
signature = validator.compute_signature(url, params)
# The SDK must accept what it signed, or the test would prove nothing.
assert validator.validate(url, params, signature)
print(signature)
