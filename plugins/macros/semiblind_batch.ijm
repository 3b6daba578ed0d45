// SemiBlind batch: deconvolve every TIFF of a folder with "Semi-Blind Deconvolution" (batch mode) and save,
// for each input NAME.tif, NAME_restored.tif (32-bit, input calibration; a stack or hyperstack comes back with
// the same channels, slices, frames, calibration and labels), NAME_psfmap.tif (the PSF map file: one slice per
// parameter, confidence, depth, ...; the psf_map option and `semiblind deconvolve --psf-map` reuse it) and
// NAME_depth.tif (µm) into the output folder.
//
// Arguments (IJ.runMacroFile(path, arg), ImageJ -batch, or runMacro):
//   input=[/path/to/tiffs/] output=[/path/to/results/] options=[iterations=30 tv=0.002 device=cpu]
// "options" are passed unchanged to run("Semi-Blind Deconvolution", options); without arguments the macro
// asks for both folders and uses the command's defaults. The command must be registered: Fiji with the
// SemiBlind script installed, or ImageJ started from Python (`semiblind imagej`, fiji_bridge.imagej.command.install()).
//
// One bad file does not stop the batch: a file that ImageJ cannot open as an image is logged and skipped; a
// file the command refuses (its one-line error is logged above) or whose results cannot all be saved counts
// as failed. Each result is saved under a temporary name and renamed, so a file under a final name is
// complete. The last log line is the summary: "semiblind_batch: D done, F failed, S skipped of N TIFF file(s)".
// Esc stops the batch (the file being processed leaves no results): "semiblind_batch: cancelled".

var input = "";                // folders and command options: globals, read by the functions below
var output = "";
var options = "";
// The command runs inside eval(): when it refuses a file it aborts only that evaluation, not this macro.
var RUN_COMMAND = "run('Semi-Blind Deconvolution', getArgument()); return 'ran';";

args = getArgument();
input = call("ij.Macro.getValue", args, "input", "");
output = call("ij.Macro.getValue", args, "output", "");
options = call("ij.Macro.getValue", args, "options", "");
if (input == "") input = getDirectory("Folder of TIFFs to deconvolve");
if (output == "") output = getDirectory("Output folder");
input = withSeparator(input);
output = withSeparator(output);
if (!File.isDirectory(input)) exit("semiblind_batch: input folder not found: " + input);
if (!File.isDirectory(output)) File.makeDirectory(output);
if (!File.isDirectory(output)) exit("semiblind_batch: cannot create output folder: " + output);

setBatchMode(true);
list = getFileList(input);
total = 0; done = 0; failed = 0; skipped = 0;
for (i = 0; i < list.length; i++) {
    name = list[i];
    lower = toLowerCase(name);
    if (!(endsWith(lower, ".tif") || endsWith(lower, ".tiff"))) continue;
    total++;
    showProgress(i, list.length);
    status = processFile(name);
    if (status == "cancelled") {
        close("*");
        setBatchMode(false);
        exit("semiblind_batch: cancelled at " + name + " after " + done + " done");
    }
    if (status == "done") done++;
    else if (startsWith(status, "skipped")) skipped++;
    else failed++;
    if (status != "done") print("semiblind_batch: " + name + " " + status);
    close("*");
}
setBatchMode(false);
print("semiblind_batch: " + done + " done, " + failed + " failed, " + skipped + " skipped of " + total
      + " TIFF file(s) in " + input + " -> " + output);

// "done", "skipped: reason" or "failed: reason"
function processFile(name) {
    close("*");
    open(input + name);                  // headless, a file ImageJ cannot read opens nothing (logged)
    if (nImages == 0) return "skipped: ImageJ cannot open it as an image";
    stem = stemOf(getTitle());
    ran = eval(RUN_COMMAND, options);     // "ran", or "[aborted]"/"0" after an error: checked below
    if (call("semiblind.SemiBlindBridge.lastError") == "cancelled") return "cancelled";
    titles = newArray(stem + "_restored", stem + "_psfmap", stem + "_depth");
    for (k = 0; k < titles.length; k++) {
        if (!isOpen(titles[k])) return "failed: the command gave no " + titles[k] + " (see its error above)";
    }
    for (k = 0; k < titles.length; k++) {
        if (!saveResult(titles[k], output)) return "failed: cannot save " + output + titles[k] + ".tif";
    }
    return "done";
}

// Save under a temporary name, then rename: 1 when the final file is complete, 0 otherwise.
function saveResult(title, folder) {
    final = folder + title + ".tif";
    part = folder + "." + title + ".semiblind-part.tif";
    selectImage(title);
    saveAs("Tiff", part);               // a failed save is logged by ImageJ and leaves no (or a partial) file
    if (!File.exists(part) || File.length(part) == 0) {
        if (File.exists(part)) dummy = File.delete(part);
        return 0;
    }
    renamed = File.rename(part, final);
    if ("" + renamed != "1") {
        dummy = File.delete(part);
        return 0;
    }
    return 1;
}

// Same rule as fiji_bridge.imagej.result_title: drop .ome.tif(f)/.tif(f).
function stemOf(title) {
    t = toLowerCase(title);
    exts = newArray(".ome.tiff", ".ome.tif", ".tiff", ".tif");
    for (k = 0; k < exts.length; k++) {
        if (endsWith(t, exts[k])) return substring(title, 0, lengthOf(title) - lengthOf(exts[k]));
    }
    return title;
}

function withSeparator(path) {
    if (path == "") return path;
    if (endsWith(path, "/") || endsWith(path, File.separator)) return path;
    return path + File.separator;
}
