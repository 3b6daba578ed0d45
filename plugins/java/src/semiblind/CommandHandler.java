package semiblind;

import ij.ImagePlus;
import java.util.Map;

/**
 * The Python side of the Semi-Blind Deconvolution and Estimate PSF Map commands.
 *
 * <p>Implemented in Python with JPype's {@code @JImplements} (see {@code fiji_bridge.imagej.command}) and
 * installed with {@link SemiBlindBridge#setHandler(CommandHandler)}. Keys of the parameter maps are the
 * macro keys of the commands: {@code iterations, tv, stride, model, device, na, wavelength, pixel_size, n,
 * objective, channels, frames, psf_map, psf_montage}; all values are strings, as typed in the dialog or the
 * macro options.</p>
 */
public interface CommandHandler {

    /** Default parameter values for this image (optics from its calibration and Info, else the bundled model). */
    Map<String, String> defaults(ImagePlus imp);

    /** The entries of each dropdown by key: objective (first "none/custom"), channels, frames, device. */
    Map<String, String[]> choices();

    /** {NA, n} of an objective preset; null for "none/custom" or an unknown name. */
    double[] objective(String name);

    /**
     * Deconvolve {@code imp} (an image or hyperstack) with {@code params}.
     *
     * @return the result images (restored image first), not yet shown
     * @throws Exception with a one-line message on bad input or a failed run; a
     *     {@link java.util.concurrent.CancellationException} when Esc cancelled it
     */
    ImagePlus[] run(ImagePlus imp, Map<String, String> params) throws Exception;

    /**
     * The PSF map of {@code imp} without deconvolving (the "Estimate PSF Map" preview).
     *
     * @return the map window, not yet shown
     * @throws Exception as {@link #run}
     */
    ImagePlus[] estimateMap(ImagePlus imp, Map<String, String> params) throws Exception;
}
