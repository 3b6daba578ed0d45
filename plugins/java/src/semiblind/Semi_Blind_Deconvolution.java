package semiblind;

import ij.IJ;
import ij.ImagePlus;
import ij.Macro;
import ij.WindowManager;
import ij.gui.GenericDialog;
import ij.plugin.PlugIn;

import java.awt.GraphicsEnvironment;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * ImageJ 1 command "Semi-Blind Deconvolution": dialog or macro options -> Python handler -> result windows.
 *
 * <p>Macro use: {@code run("Semi-Blind Deconvolution", "iterations=0 tv=auto stride=0 model=[] device=cpu
 * na=1.4 wavelength=0.52 pixel_size=0.065 n=1.518 psf_montage");}. Keys that are left out take their
 * defaults: iterations=0 and tv=auto let the image's noise choose them; optics from the image calibration and
 * the bundled model. Errors are reported with
 * {@code IJ.error} and abort the running macro.</p>
 */
public class Semi_Blind_Deconvolution implements PlugIn {

    /**
     * Dialog fields before Model and Device: key, text shown after the field, and the digits of a numeric
     * field or "text" for a text field. The keys, labels and defaults are those of Python's
     * {@code fiji_bridge.settings.RunSettings} (checked by tests/test_settings.py).
     */
    static final String[][] FIELDS = {
        {"iterations", "(0 = auto)", "0"},
        {"tv", "(TV weight 0-0.2, auto = from the noise)", "text"},
        {"stride", "px (0 = auto)", "0"},
        {"na", "(numerical aperture, 0 = model's)", "3"},
        {"wavelength", "um (emission, 0 = model's)", "3"},
        {"pixel_size", "um (0 = image calibration)", "4"},
        {"n", "(immersion refractive index, 0 = model's)", "3"},
    };

    @Override
    public void run(String arg) {
        ImagePlus imp = WindowManager.getCurrentImage();
        if (imp == null) {
            SemiBlindBridge.fail("Semi-Blind Deconvolution: no image is open");
            return;
        }
        SemiBlindBridge.runOn(imp, this);
    }

    /** Parameters from the macro options, the dialog, or the defaults; null when the dialog was cancelled. */
    Map<String, String> parameters(Map<String, String> defaults) {
        Map<String, String> p = new LinkedHashMap<>(defaults);
        String options = Macro.getOptions();
        if (options == null && !GraphicsEnvironment.isHeadless()) {
            return dialog(p);
        }
        if (options != null) {
            p.putAll(parseOptions(options)); // unknown keys reach Python, which names them in the error
        }
        return p;
    }

    private Map<String, String> dialog(Map<String, String> p) {
        GenericDialog gd = new GenericDialog("Semi-Blind Deconvolution");
        for (String[] field : FIELDS) {
            String key = field[0];
            if (field[2].equals("text")) {
                gd.addStringField(label(key), p.getOrDefault(key, ""), 8);
                gd.addToSameRow();
                gd.addMessage(field[1]);
                continue;
            }
            int digits = Integer.parseInt(field[2]);
            double value = parseOr(p.get(key), 0.0);
            gd.addNumericField(label(key), value, digits, 8, field[1]);
        }
        gd.addStringField(label("model"), p.getOrDefault("model", ""), 24);
        String device = p.getOrDefault("device", "cpu");
        String[] devices = {"cpu", "gpu", "auto"};
        gd.addChoice(label("device"), devices, java.util.Arrays.asList(devices).contains(device) ? device : "cpu");
        gd.addCheckbox("PSF_montage", Boolean.parseBoolean(p.getOrDefault("psf_montage", "false")));
        gd.addMessage("Model: empty = bundled model. Pixel size defaults to the image calibration,\nNA, wavelength and n to the model's optics.");
        gd.showDialog();
        if (gd.wasCanceled()) {
            return null;
        }
        for (String[] field : FIELDS) {
            if (field[2].equals("text")) {
                p.put(field[0], gd.getNextString().trim());
                continue;
            }
            double v = gd.getNextNumber();
            p.put(field[0], field[2].equals("0") ? Long.toString(Math.round(v)) : Double.toString(v));
        }
        p.put("model", gd.getNextString());
        p.put("device", gd.getNextChoice());
        p.put("psf_montage", Boolean.toString(gd.getNextBoolean()));
        return p;
    }

    /**
     * Macro options as ImageJ writes them: {@code key=value}, {@code key=[value with spaces]}, or a bare
     * {@code flag} (= "true").
     */
    static Map<String, String> parseOptions(String options) {
        Map<String, String> out = new LinkedHashMap<>();
        String s = options.trim();
        int i = 0;
        while (i < s.length()) {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) {
                i++;
            }
            int start = i;
            while (i < s.length() && s.charAt(i) != '=' && !Character.isWhitespace(s.charAt(i))) {
                i++;
            }
            String key = s.substring(start, i);
            if (key.isEmpty()) {
                break;
            }
            if (i >= s.length() || s.charAt(i) != '=') {
                out.put(key, "true");
                continue;
            }
            i++; // '='
            String value;
            if (i < s.length() && s.charAt(i) == '[') {
                int end = s.indexOf(']', i + 1);
                end = end < 0 ? s.length() : end;
                value = s.substring(i + 1, end);
                i = Math.min(end + 1, s.length());
            } else {
                int end = i;
                while (end < s.length() && !Character.isWhitespace(s.charAt(end))) {
                    end++;
                }
                value = s.substring(i, end);
                i = end;
            }
            out.put(key, value);
        }
        return out;
    }

    /** Dialog label whose macro key (first word, lower case) is {@code key}; '_' shows as a space. */
    static String label(String key) {
        switch (key) {
            case "iterations": return "Iterations";
            case "tv": return "TV";
            case "stride": return "Stride";
            case "na": return "NA";
            case "wavelength": return "Wavelength";
            case "pixel_size": return "Pixel_size";
            case "n": return "n";
            case "model": return "Model";
            case "device": return "Device";
            default: return key;
        }
    }

    private static double parseOr(String s, double fallback) {
        try {
            return Double.parseDouble(s);
        } catch (RuntimeException e) {
            return fallback;
        }
    }

    /** ImageJ's {@code IJ.run} entry point for scripts that pass an image explicitly. */
    public static void runOn(ImagePlus imp) {
        SemiBlindBridge.runOn(imp, new Semi_Blind_Deconvolution());
    }

    static void showStatusDone() {
        IJ.showProgress(1.0);
    }
}
