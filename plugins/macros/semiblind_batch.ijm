// SemiBlind batch: deconvolve every TIFF of a folder with "Semi-Blind Deconvolution" (batch mode) and save,
// for each input NAME.tif, NAME_restored.tif (32-bit, input calibration), NAME_psfmap.tif (labelled
// parameter stack + confidence, calibrated on the patch grid) and NAME_depth.tif (µm) into the output folder.
//
// Arguments (IJ.runMacroFile(path, arg), ImageJ -batch, or runMacro):
//   input=[/path/to/tiffs/] output=[/path/to/results/] options=[iterations=30 tv=0.002 device=cpu]
// "options" are passed unchanged to run("Semi-Blind Deconvolution", options); without arguments the macro
// asks for both folders and uses the command's defaults. The command must be registered: Fiji with the
// SemiBlind script installed, or ImageJ started from Python (`semiblind imagej`, fiji_bridge.fiji_command.install()).
// An error in the command aborts the macro with its message.

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
count = 0;
for (i = 0; i < list.length; i++) {
    name = list[i];
    lower = toLowerCase(name);
    if (!(endsWith(lower, ".tif") || endsWith(lower, ".tiff"))) continue;
    open(input + name);
    stem = stemOf(getTitle());
    run("Semi-Blind Deconvolution", options);
    saveResult(stem + "_restored", output);
    saveResult(stem + "_psfmap", output);
    saveResult(stem + "_depth", output);
    close("*");
    count++;
    showProgress(i + 1, list.length);
}
setBatchMode(false);
print("semiblind_batch: " + count + " image(s) deconvolved into " + output);

function saveResult(title, folder) {
    if (!isOpen(title)) exit("semiblind_batch: result image missing: " + title);
    selectImage(title);
    saveAs("Tiff", folder + title + ".tif");
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
