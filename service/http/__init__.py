"""HTTP in and out: the Falcon resources of the contract, upload bodies, validators and
conditional requests, the middleware in front of them, and the protocol uvicorn runs."""
