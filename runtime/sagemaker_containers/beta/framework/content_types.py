"""Content type names, as the old library spelled them."""

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
OCTET_STREAM = "application/octet-stream"
ANY = "*/*"
UTF8_TYPES = [JSON, CSV]

__all__ = ["ANY", "CSV", "JSON", "NPY", "OCTET_STREAM", "UTF8_TYPES"]
