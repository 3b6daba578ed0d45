"""napari plugin (npe2): the semi-blind deconvolution widget, a reader/writer for PSF-map files and a sample.

Installed with the ``napari`` extra (``pip install 'semiblind[napari]'`` from a checkout or wheel); the core
package never imports napari or Qt. The manifest is ``napari.yaml`` beside this file.
"""
