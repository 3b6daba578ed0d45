package semiblind;

import ij.IJ;
import ij.ImageJ;
import ij.ImagePlus;
import ij.Macro;
import ij.Menus;
import ij.WindowManager;
import ij.gui.ImageCanvas;
import ij.macro.Interpreter;

import java.awt.GraphicsEnvironment;
import java.awt.Menu;
import java.awt.MenuBar;
import java.awt.MenuItem;
import java.io.BufferedReader;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.util.Hashtable;
import java.util.Map;
import java.util.concurrent.CancellationException;

/**
 * Glue between ImageJ 1 and the Python implementation of Semi-Blind Deconvolution.
 *
 * <p>A Python-hosted JVM (scyjava/JPype, PyImageJ) installs a {@link CommandHandler} with
 * {@link #setHandler(CommandHandler)} and registers the menu command with {@link #register(String)}, after
 * which {@code run("Semi-Blind Deconvolution", "...")} works in macros and, with a display, the command is in
 * Plugins &gt; Deconvolution. Where ImageJ's menus cannot be used, macros can call
 * {@code call("semiblind.SemiBlindBridge.run", "iterations=30 ...")}.</p>
 */
public final class SemiBlindBridge {

    /** Menu command name. */
    public static final String COMMAND = "Semi-Blind Deconvolution";
    /** Title of error dialogs. */
    public static final String TITLE = "Semi-Blind Deconvolution";

    private static volatile CommandHandler handler;
    private static volatile String lastError = "";
    private static volatile ImagePlus[] lastResults = new ImagePlus[0];

    private SemiBlindBridge() {
    }

    /** Install (or, with null, remove) the Python implementation of the command. */
    public static void setHandler(CommandHandler h) {
        handler = h;
    }

    /** The installed handler, or null. */
    public static CommandHandler getHandler() {
        return handler;
    }

    /** Result images of the last run (restored image first); empty before any and after a failed or cancelled one. */
    public static ImagePlus[] lastResults() {
        return lastResults.clone();
    }

    /**
     * Show the results and make the restored image (the first) the current one, so that the next macro
     * command works on it: windows with a display; batch-mode images inside a headless macro; headless outside
     * a macro (e.g. {@code IJ.run(imp, ...)} from Python) only the current image is set, see
     * {@link #lastResults()}.
     */
    private static void show(ImagePlus[] results) {
        boolean canShow = !GraphicsEnvironment.isHeadless() || Interpreter.getInstance() != null;
        ImagePlus first = null;
        for (ImagePlus out : results) {
            if (out == null) {
                continue;
            }
            first = first == null ? out : first;
            if (canShow) {
                out.show();
                zoomSmall(out);
            }
        }
        if (first == null) {
            return;
        }
        if (first.getWindow() != null) {
            WindowManager.setCurrentWindow(first.getWindow());
            first.getWindow().toFront();
        } else if (Interpreter.getInstance() != null && canShow) {
            Interpreter.activateImage(first);
        }
        WindowManager.setTempCurrentImage(first);
    }

    /** Smallest side, in screen pixels, at which a result window opens (maps are a few dozen pixels wide). */
    static final int MIN_SCREEN_SIDE = 256;

    /** Zoom the window of a small image (a map on the patch grid) to ImageJ's first level at which its larger
     * side reaches {@link #MIN_SCREEN_SIDE} screen pixels. */
    static void zoomSmall(ImagePlus imp) {
        if (imp.getWindow() == null) {
            return;
        }
        int side = Math.max(imp.getWidth(), imp.getHeight());
        double magnification = 1.0;
        while (side * magnification < MIN_SCREEN_SIDE && magnification < 32.0) {
            magnification = ImageCanvas.getHigherZoomLevel(magnification);
        }
        if (magnification > 1.0) {
            IJ.run(imp, "Set... ", "zoom=" + Math.round(magnification * 100));
        }
    }

    /** One-line message of the last failed run ("" when the last run succeeded). */
    public static String lastError() {
        return lastError;
    }

    /**
     * Make {@code command} runnable with {@code IJ.run}/{@code run(...)}.
     *
     * <p>Headless (no ImageJ window, menus never built): ImageJ's command table is created from the
     * {@code IJ_Props.txt} of ij.jar (so built-in commands keep working) and the command is added. With an
     * ImageJ window: the command is added to the table and to a "Deconvolution" submenu of Plugins.</p>
     *
     * @return true when the command was added to the Plugins menu (a window exists), false when only to the table
     */
    public static synchronized boolean register(String command) throws Exception {
        return register(command, Semi_Blind_Deconvolution.class.getName());
    }

    /** {@link #register(String)} for the plugin class {@code className} (e.g. {@code semiblind.Estimate_PSF_Map}). */
    public static synchronized boolean register(String command, String className) throws Exception {
        Hashtable<String, String> table = commandTable();
        table.put(command, className);
        ImageJ ij = IJ.getInstance();
        MenuBar bar = Menus.getMenuBar();
        if (ij == null || bar == null) {
            return false;
        }
        Menu plugins = findMenu(bar, "Plugins");
        if (plugins == null) {
            return false;
        }
        Menu deconv = findSubmenu(plugins, "Deconvolution");
        if (deconv == null) {
            deconv = new Menu("Deconvolution");
            plugins.add(deconv);
        }
        for (int i = 0; i < deconv.getItemCount(); i++) {
            if (command.equals(deconv.getItem(i).getLabel())) {
                return true;
            }
        }
        MenuItem item = new MenuItem(command);
        item.addActionListener(ij);
        deconv.add(item);
        return true;
    }

    /** Labels of the Plugins menu tree, one "Menu>Submenu>Item" path per line (for checks and tests). */
    public static String pluginsMenuPaths() {
        MenuBar bar = Menus.getMenuBar();
        if (bar == null) {
            return "";
        }
        Menu plugins = findMenu(bar, "Plugins");
        StringBuilder sb = new StringBuilder();
        if (plugins != null) {
            appendPaths(plugins, "Plugins", sb);
        }
        return sb.toString();
    }

    /** The menu item of {@code command} under Plugins, or null. */
    public static MenuItem findMenuItem(String command) {
        MenuBar bar = Menus.getMenuBar();
        Menu plugins = bar == null ? null : findMenu(bar, "Plugins");
        return plugins == null ? null : findItem(plugins, command);
    }

    private static MenuItem findItem(Menu menu, String label) {
        for (int i = 0; i < menu.getItemCount(); i++) {
            MenuItem item = menu.getItem(i);
            if (item instanceof Menu) {
                MenuItem found = findItem((Menu) item, label);
                if (found != null) {
                    return found;
                }
            } else if (label.equals(item.getLabel())) {
                return item;
            }
        }
        return null;
    }

    private static void appendPaths(Menu menu, String prefix, StringBuilder sb) {
        for (int i = 0; i < menu.getItemCount(); i++) {
            MenuItem item = menu.getItem(i);
            String path = prefix + ">" + item.getLabel();
            if (item instanceof Menu) {
                appendPaths((Menu) item, path, sb);
            } else {
                sb.append(path).append('\n');
            }
        }
    }

    private static Menu findMenu(MenuBar bar, String label) {
        for (int i = 0; i < bar.getMenuCount(); i++) {
            Menu m = bar.getMenu(i);
            if (m != null && label.equals(m.getLabel())) {
                return m;
            }
        }
        return null;
    }

    private static Menu findSubmenu(Menu menu, String label) {
        for (int i = 0; i < menu.getItemCount(); i++) {
            MenuItem item = menu.getItem(i);
            if (item instanceof Menu && label.equals(item.getLabel())) {
                return (Menu) item;
            }
        }
        return null;
    }

    /** ImageJ's command table, created headlessly from IJ_Props.txt when the menus were never built. */
    @SuppressWarnings("unchecked")
    static Hashtable<String, String> commandTable() throws Exception {
        Hashtable<String, String> table = Menus.getCommands();
        if (table != null) {
            return table;
        }
        table = new Hashtable<>();
        InputStream in = IJ.class.getResourceAsStream("/IJ_Props.txt");
        if (in != null) {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.ISO_8859_1))) {
                String line;
                while ((line = r.readLine()) != null) {
                    addPropsEntry(table, line);
                }
            }
        }
        Field f = Menus.class.getDeclaredField("pluginsTable");
        f.setAccessible(true);
        f.set(null, table);
        return table;
    }

    /** Parse {@code key="Label[shortcut]",class.Name("arg")} into the table. */
    private static void addPropsEntry(Hashtable<String, String> table, String line) {
        int eq = line.indexOf("=\"");
        if (line.startsWith("#") || eq < 0) {
            return;
        }
        int close = line.indexOf("\",", eq + 2);
        if (close < 0) {
            return;
        }
        String label = line.substring(eq + 2, close);
        String cls = line.substring(close + 2).trim();
        if (label.endsWith("]") && label.indexOf('[') > 0) {
            label = label.substring(0, label.lastIndexOf('['));
        }
        label = label.trim();
        if (!label.isEmpty() && !cls.isEmpty() && !table.containsKey(label)) {
            table.put(label, cls);
        }
    }

    /** Run the command on {@code imp} with the current macro options (or a dialog). */
    static void runOn(ImagePlus imp, Semi_Blind_Deconvolution command) {
        CommandHandler h = handler;
        if (h == null) {
            fail(command.title() + " needs the Python bridge: start ImageJ with `semiblind imagej` "
                 + "or use the Fiji script command");
            return;
        }
        IJ.resetEscape(); // an Esc pressed before this run does not cancel it
        lastResults = new ImagePlus[0];
        try {
            Map<String, String> params = command.parameters(h, imp);
            if (params == null) {
                return; // dialog cancelled
            }
            ImagePlus[] results = command.mapOnly() ? h.estimateMap(imp, params) : h.run(imp, params);
            lastError = "";
            lastResults = results == null ? new ImagePlus[0] : results;
            show(lastResults);
        } catch (Throwable t) {
            if (isCancellation(t)) {
                cancelled(command.title());
            } else {
                fail(command.title(), message(t));
            }
        } finally {
            IJ.showProgress(1.0);
        }
    }

    /** Whether {@code t} (or a cause) is the cancellation the Python side raises when Esc was pressed. */
    static boolean isCancellation(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (c instanceof CancellationException) {
                return true;
            }
        }
        return false;
    }

    /**
     * Esc cancelled a run: nothing was made or shown; "cancelled" in the status line and the log, no error
     * dialog, the Esc flag cleared (the next run starts normally), and a running macro stops.
     */
    static void cancelled(String title) {
        lastError = "cancelled";
        IJ.resetEscape();
        IJ.showProgress(1.0);
        IJ.showStatus(title + ": cancelled");
        IJ.log(title + ": cancelled");
        if (Interpreter.getInstance() != null) {
            Interpreter.abort();
        }
    }

    /**
     * Macro fallback: {@code call("semiblind.SemiBlindBridge.run", options)} on the current image.
     *
     * @return "" on success, otherwise the error message (the macro is aborted as well)
     */
    public static String run(String options) {
        ImagePlus imp = WindowManager.getCurrentImage();
        if (imp == null) {
            fail("Semi-Blind Deconvolution: no image is open");
            return lastError;
        }
        String previous = Macro.getOptions();
        Macro.setOptions(options == null || options.trim().isEmpty() ? " " : options + " ");
        try {
            runOn(imp, new Semi_Blind_Deconvolution());
        } finally {
            Macro.setOptions(previous);
        }
        return lastError;
    }

    /**
     * Report an error and abort a running macro.
     *
     * <p>With a display: {@code IJ.error} (inside a macro this is ImageJ's macro-error dialog, which aborts
     * the macro). Headless: ImageJ 1 cannot show that dialog, so the message goes to the log (stdout
     * without a Log window) and the running macro is aborted without a dialog; {@link #lastError()} keeps the message.</p>
     */
    static void fail(String message) {
        fail(TITLE, message);
    }

    /** {@link #fail(String)} with the title of the command that failed. */
    static void fail(String title, String message) {
        lastError = message;
        IJ.showStatus("");
        IJ.showProgress(1.0);
        if (!GraphicsEnvironment.isHeadless()) {
            IJ.error(title, message);
            return;
        }
        IJ.log(title + " error: " + message);
        if (Interpreter.getInstance() != null) {
            Interpreter interp = Interpreter.getInstance();
            interp.setIgnoreErrors(true); // no dialog (none can be shown headless), no 2 s wait
            interp.abort(title + ": " + message);
        }
    }

    /** One line: the innermost message of {@code t}, without a Java/Python exception class prefix. */
    static String message(Throwable t) {
        Throwable cause = t;
        while (cause.getCause() != null && cause.getCause() != cause && cause.getMessage() == null) {
            cause = cause.getCause();
        }
        String msg = cause.getMessage();
        if (msg == null || msg.trim().isEmpty()) {
            msg = cause.getClass().getSimpleName();
        }
        msg = msg.trim();
        int nl = msg.indexOf('\n');
        return nl >= 0 ? msg.substring(0, nl).trim() : msg;
    }
}
