"""Runs the gcp-storage-emulator package (a GCS JSON-API server, in memory) for the tests, with
two behaviours of real GCS that it lacks and TensorStore relies on:
  * a media download carries the object's generation in `x-goog-generation` (TensorStore
    reads it; without it every read fails with "Malformed StorageGeneration");
  * `ifGenerationNotMatch` / `ifGenerationMatch` on a download are honoured (304 / 412).
Usage: python tests/gcs_emulator.py PORT BUCKET
"""

import sys
from http import HTTPStatus

from gcp_storage_emulator.handlers import objects  # before the server module binds its routes

_download = objects.download


def download(request, response, storage, *args, **kwargs):
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except Exception:
    return _download(request, response, storage, *args, **kwargs)  # its 404
  generation = str(obj["generation"])
  query = request.query
  if generation in query.get("ifGenerationNotMatch", ()):
    response.status = HTTPStatus.NOT_MODIFIED
  elif "ifGenerationMatch" in query and generation not in query["ifGenerationMatch"]:
    response.status = HTTPStatus.PRECONDITION_FAILED
  else:
    _download(request, response, storage, *args, **kwargs)
  response["x-goog-generation"] = generation
  response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))


objects.download = download

from gcp_storage_emulator.server import create_server

if __name__ == "__main__":
  port, bucket = int(sys.argv[1]), sys.argv[2]
  create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()
