package semiblind;

import ij.ImagePlus;
import java.util.Map;

/**
 * The Python side of the Semi-Blind Deconvolution command.
 *
 * <p>Implemented in Python with JPype's {@code @JImplements} (see {@code fiji_bridge.imagej.command}) and
 * installed with {@link SemiBlindBridge#setHandler(CommandHandler)}. Keys of the parameter maps are the
 * macro keys of the command: {@code iterations, tv, stride, model, device, na, wavelength, pixel_size, n,
 * psf_montage}; all values are strings, as typed in the dialog or the macro options.</p>
 */
public interface CommandHandler {

    /** Default parameter values for this image (optics from its calibration and the bundled model). */
    Map<String, String> defaults(ImagePlus imp);

    /**
     * Deconvolve {@code imp} with {@code params}.
     *
     * @return the result images (restored image first), not yet shown
     * @throws Exception with a one-line message on bad input or a failed run
     */
    ImagePlus[] run(ImagePlus imp, Map<String, String> params) throws Exception;
}
