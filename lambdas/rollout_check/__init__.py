"""CodeDeploy's pre-traffic (BeforeAllowTraffic) check of a new API function version.

Before CodeDeploy moves any of the ``live`` alias's traffic, this function invokes the new version
directly with two synthetic API Gateway requests (``GET /v1/model``, then ``POST /v1/score`` of an
application built from the served card), judges the answers and reports ``Succeeded`` or ``Failed``.

Standard library only (boto3 comes with Lambda's runtime): the API function imports
:mod:`lambdas.rollout_check.marker` to recognise the check's requests, so nothing here may pull in more.
"""
