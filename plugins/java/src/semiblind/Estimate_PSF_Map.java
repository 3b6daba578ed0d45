package semiblind;

import ij.ImagePlus;
import ij.WindowManager;

/**
 * ImageJ 1 command "Estimate PSF Map": the PSF map of the current image or hyperstack, no deconvolution (a
 * quick preview before the long run). Its dialog is that of Semi-Blind Deconvolution without the restoration
 * fields (iterations, TV, PSF map, montage); File &gt; Save As Tiff of its window gives a map that the
 * psf_map field of Semi-Blind Deconvolution (and {@code semiblind deconvolve --psf-map}) reuses.
 *
 * <p>Macro use: {@code run("Estimate PSF Map", "objective=60x/1.4-oil channels=best");}.</p>
 */
public class Estimate_PSF_Map extends Semi_Blind_Deconvolution {

    /** Menu command name. */
    public static final String COMMAND = "Estimate PSF Map";

    @Override
    public void run(String arg) {
        ImagePlus imp = WindowManager.getCurrentImage();
        if (imp == null) {
            SemiBlindBridge.fail(COMMAND + ": no image is open");
            return;
        }
        SemiBlindBridge.runOn(imp, this);
    }

    @Override
    boolean mapOnly() {
        return true;
    }

    @Override
    String title() {
        return COMMAND;
    }
}
