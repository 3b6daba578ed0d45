"""Scale-out: the Dask engine (`dask_engine`: local or remote cluster, cached models) and folder batches
(`batch`: manifest, resume, one batch per output folder)."""
