// Runs a MicroPython scenario on the real MicroPython VM (WebAssembly port, from npm).
//
//   node run_vm.mjs SPEC.json
//   SPEC = {"heapsize": bytes, "files": [[vm_path, host_path], ...], "script": host_path,
//           "repeat": {"code": str, "times": n}, "finish": str}     (repeat, finish optional)
//
// Every file is copied into the VM's in-memory file system (directories made as needed),
// then the script runs as __main__; then `repeat.code` runs `times` times and `finish` once,
// each as a runPython call of its own. That matters for memory figures: this port's
// gc.collect() frees nothing allocated during the runPython call it runs in (its roots
// include the whole call), only what earlier calls left, so a scan measured in a call of
// its own starts from a clean heap. Stdout is passed through; a line starting with
// "RESULT " carries the scenario's JSON result (tests/firmware/vm.py reads the last one).
// Exit 0 on success; 1 with the Python traceback on stderr if the script raised;
// 2 if the VM package is missing (run `make peers`).
import { readFileSync, existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, "../npm/node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs");
if (!existsSync(pkg)) {
  process.stderr.write(`MicroPython VM not installed (${pkg}): run make peers\n`);
  process.exit(2);
}
const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { loadMicroPython } = await import(pathToFileURL(pkg).href);
let err = "";
const mp = await loadMicroPython({
  heapsize: spec.heapsize ?? 64 * 1024,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => { err += line + "\n"; },
});
for (const [vmPath, hostPath] of spec.files) {
  const parts = vmPath.split("/").filter(Boolean);
  let dir = "";
  for (const p of parts.slice(0, -1)) {
    dir += "/" + p;
    try { mp.FS.mkdir(dir); } catch (e) { /* exists */ }
  }
  mp.FS.writeFile(vmPath, readFileSync(hostPath));
}
try {
  mp.runPython(readFileSync(spec.script, "utf8"));
  for (let i = 0; i < (spec.repeat?.times ?? 0); i++) mp.runPython(spec.repeat.code);
  if (spec.finish) mp.runPython(spec.finish);
} catch (e) {
  process.stderr.write(err + String(e.message ?? e) + "\n");
  process.exit(1);
}
if (err) process.stderr.write(err);
