"""Input/output: TIFF/OME-TIFF reading and writing with calibration (`tiff`), calibration units -> µm (`units`),
atomic writes honouring the umask (`atomic`) and the PNG report figure (`report`, needs the ``report`` extra:
matplotlib)."""
