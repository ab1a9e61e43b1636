"""Domain errors, free of any framework; service/http/resources.py maps them to HTTP."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a client can cause or must be told about."""

    title = "Error"


class ImageNotFound(ServiceError):
    title = "Image not found"


class Unauthorized(ServiceError):
    """No API key, or one that is not known, where one is needed."""

    title = "API key needed"


class Forbidden(ServiceError):
    """A known key (or nobody) that may not do this."""

    title = "Forbidden"


class RateLimited(ServiceError):
    """Over a rate limit; what the RateLimit headers and Retry-After say."""

    title = "Too many requests"

    def __init__(self, message: str, policy: str, state: str, retry_after: int) -> None:
        super().__init__(message)
        self.policy = policy
        self.state = state
        self.retry_after = retry_after


class ImageExists(ServiceError):
    """A save found its id taken: never overwritten, never cleaned up (it is not the save's)."""

    title = "Image exists"


class EmptyUpload(ServiceError):
    title = "Empty upload"


class UploadTooLarge(ServiceError):
    title = "Upload too large"


class UploadTimeout(ServiceError):
    title = "Upload too slow"


class ClientDisconnected(ServiceError):
    """The client went away before its whole request body arrived: nobody is left to answer."""

    title = "Client disconnected"


class ImageTooLarge(ServiceError):
    title = "Image too large"


class UnsupportedImage(ServiceError):
    title = "Unsupported image"


class InvalidForm(ServiceError):
    title = "Invalid form"


class InvalidImage(ServiceError):
    title = "Invalid image"


class InvalidCursor(ServiceError):
    title = "Invalid cursor"


class NotAcceptable(ServiceError):
    title = "Not acceptable"


class RangeNotSatisfiable(ServiceError):
    title = "Range not satisfiable"

    def __init__(self, length: int) -> None:
        super().__init__(f"the image has {length} bytes")
        self.length = length


class StorageUnavailable(ServiceError):
    title = "Storage unavailable"


class Overloaded(ServiceError):
    title = "Overloaded"
