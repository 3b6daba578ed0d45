package semiblind;

import ij.IJ;
import ij.ImagePlus;
import ij.Macro;
import ij.WindowManager;
import ij.gui.DialogListener;
import ij.gui.GenericDialog;
import ij.plugin.PlugIn;

import java.awt.AWTEvent;
import java.awt.Choice;
import java.awt.GraphicsEnvironment;
import java.awt.TextField;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * ImageJ 1 command "Semi-Blind Deconvolution": dialog or macro options -> Python handler -> result windows.
 *
 * <p>Macro use: {@code run("Semi-Blind Deconvolution", "iterations=0 tv=auto stride=0 model=[] device=cpu
 * na=1.4 wavelength=0.52 pixel_size=0.065 n=1.518 objective=60x/1.4-oil channels=best frames=smooth
 * psf_map=[] psf_montage");}. Keys that are left out take their defaults: iterations=0 and tv=auto let the
 * image's noise choose them; optics from the objective preset, the image calibration and the bundled model.
 * Hyperstacks come back as hyperstacks; a selection restricts the run to its bounding box; Esc cancels.
 * Errors are reported with {@code IJ.error} and abort the running macro.</p>
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
        {"wavelength", "um (emission, 0 = model's; per channel: 0.46,0.52)", "text"},
        {"pixel_size", "um (0 = image calibration)", "4"},
        {"n", "(immersion refractive index, 0 = model's)", "3"},
    };

    /** Fields of the deconvolution that the map preview (Estimate PSF Map) does not have. */
    static final List<String> RESTORATION_ONLY = Arrays.asList("iterations", "tv", "psf_map", "psf_montage");

    /** Dropdowns after the model field, entries from {@link CommandHandler#choices()}. */
    static final String[] CHOICES = {"device", "objective", "channels", "frames"};

    @Override
    public void run(String arg) {
        ImagePlus imp = WindowManager.getCurrentImage();
        if (imp == null) {
            SemiBlindBridge.fail("Semi-Blind Deconvolution: no image is open");
            return;
        }
        SemiBlindBridge.runOn(imp, this);
    }

    /** Whether this is the map preview (no restoration). */
    boolean mapOnly() {
        return false;
    }

    /** Menu command name, dialog and error title. */
    String title() {
        return SemiBlindBridge.TITLE;
    }

    /**
     * Parameters from the macro options (keys left out: Python's defaults), or the dialog; null when the
     * dialog was cancelled. Headless without options: all defaults.
     */
    Map<String, String> parameters(CommandHandler h, ImagePlus imp) {
        String options = Macro.getOptions();
        if (options != null) {
            return parseOptions(options); // unknown keys reach Python, which names them in the error
        }
        if (GraphicsEnvironment.isHeadless()) {
            return new LinkedHashMap<>();
        }
        return dialog(new LinkedHashMap<>(h.defaults(imp)), h);
    }

    private boolean offered(String key) {
        return !(mapOnly() && RESTORATION_ONLY.contains(key));
    }

    private Map<String, String> dialog(Map<String, String> p, CommandHandler h) {
        GenericDialog gd = new GenericDialog(title());
        List<String> numeric = new ArrayList<>();
        for (String[] field : FIELDS) {
            String key = field[0];
            if (!offered(key)) {
                continue;
            }
            if (field[2].equals("text")) {
                gd.addStringField(label(key), p.getOrDefault(key, ""), 8);
                gd.addToSameRow();
                gd.addMessage(field[1]);
                continue;
            }
            gd.addNumericField(label(key), parseOr(p.get(key), 0.0), Integer.parseInt(field[2]), 8, field[1]);
            numeric.add(key);
        }
        gd.addFileField(label("model"), p.getOrDefault("model", ""), 24);
        Map<String, String[]> choices = h.choices();
        for (String key : CHOICES) {
            String[] items = choices.get(key);
            String value = p.getOrDefault(key, items[0]);
            gd.addChoice(label(key), items, Arrays.asList(items).contains(value) ? value : items[0]);
        }
        if (offered("psf_map")) {
            gd.addFileField(label("psf_map"), p.getOrDefault("psf_map", ""), 24);
            gd.addCheckbox("PSF_montage", Boolean.parseBoolean(p.getOrDefault("psf_montage", "false")));
        }
        gd.addMessage("Model and PSF map: empty = bundled model, estimate a map. The objective sets NA and n.\n"
                      + "Pixel size defaults to the image calibration, NA, wavelength and n to the model's optics.\n"
                      + "A selection restricts the run to its bounding box; Esc cancels.");
        objectiveSetsOptics(gd, h, numeric);
        gd.showDialog();
        if (gd.wasCanceled()) {
            return null;
        }
        return readDialog(gd, p);
    }

    /** Choosing an objective preset writes its NA and n into their fields. */
    private static void objectiveSetsOptics(GenericDialog gd, CommandHandler h, List<String> numeric) {
        final Choice objective = (Choice) gd.getChoices().get(Arrays.asList(CHOICES).indexOf("objective"));
        final int na = numeric.indexOf("na");
        final int n = numeric.indexOf("n");
        gd.addDialogListener(new DialogListener() {
            @Override
            public boolean dialogItemChanged(GenericDialog dialog, AWTEvent e) {
                if (e == null || e.getSource() != objective) {
                    return true;
                }
                double[] preset = h.objective(objective.getSelectedItem());
                if (preset != null && na >= 0 && n >= 0) {
                    ((TextField) dialog.getNumericFields().get(na)).setText(IJ.d2s(preset[0], 3));
                    ((TextField) dialog.getNumericFields().get(n)).setText(IJ.d2s(preset[1], 3));
                }
                return true;
            }
        });
    }

    private Map<String, String> readDialog(GenericDialog gd, Map<String, String> p) {
        for (String[] field : FIELDS) {
            if (!offered(field[0])) {
                p.remove(field[0]);
                continue;
            }
            if (field[2].equals("text")) {
                p.put(field[0], gd.getNextString().trim());
                continue;
            }
            double v = gd.getNextNumber();
            p.put(field[0], field[2].equals("0") ? Long.toString(Math.round(v)) : Double.toString(v));
        }
        p.put("model", gd.getNextString().trim());
        for (String key : CHOICES) {
            p.put(key, gd.getNextChoice());
        }
        if (offered("psf_map")) {
            p.put("psf_map", gd.getNextString().trim());
            p.put("psf_montage", Boolean.toString(gd.getNextBoolean()));
        } else {
            p.remove("psf_map");
            p.remove("psf_montage");
        }
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
            case "objective": return "Objective";
            case "channels": return "Channels";
            case "frames": return "Frames";
            case "psf_map": return "PSF_map";
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
