// A developer's first minutes in code-server, in a real browser (Debian's chromium driven by
// playwright-core): a wrong password stays on the login page; the right one opens the
// workbench on ~/workspace with no Workspace Trust prompt; a terminal runs bash, git and
// Claude Code, and writes ~/.gitconfig and a file in ~/workspace.
// With CS_OLD_PASSWORD (after a password rotation): the old password stays on the login
// page, the new one logs in, and the terminal finds both files as they were written.
//
//   CS_PASSWORD=... CS_MARK=... node tests/browser/workbench.mjs http://127.0.0.1:8445/
//
// Environment: CS_PASSWORD (the password; kept out of argv), CS_SCREENSHOTS (directory for
// screenshots: failed-<step>.png on failure, terminal.png or terminal-after-rotation.png
// on success; default: the current
// directory), CSAGENT_PLAYWRIGHT_DIR (where playwright-core is installed; default
// ${CSAGENT_CI_CACHE:-/var/cache/csagent-ci}/playwright, made by ensure_browser in
// scripts/lib/services.sh), CHROMIUM (default /usr/bin/chromium), CS_EXPECT_CLAUDE_KEY=1
// (Claude Code's apiKeyHelper, csagent-claude-key, must find a key from the terminal),
// CS_MARK (a token written into ~/.gitconfig and ~/workspace/notes.txt, or expected in
// them after a rotation), CS_OLD_PASSWORD (set after a rotation: check the files instead
// of writing them).
// Exits 0 when every check passed, 1 (after a screenshot) when one failed, 2 on bad usage.

import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const url = process.argv[2];
const password = process.env.CS_PASSWORD;
const oldPassword = process.env.CS_OLD_PASSWORD;
const mark = process.env.CS_MARK;
if (!url || !password || !mark || !/^[a-z0-9-]+$/.test(mark)) {
  console.error("usage: CS_PASSWORD=... CS_MARK=<a-z0-9-> [CS_OLD_PASSWORD=...] node workbench.mjs URL");
  process.exit(2);
}
const shots = process.env.CS_SCREENSHOTS || ".";
mkdirSync(shots, { recursive: true });
const pwDir =
  process.env.CSAGENT_PLAYWRIGHT_DIR ||
  join(process.env.CSAGENT_CI_CACHE || "/var/cache/csagent-ci", "playwright");
const { chromium } = createRequire(join(pwDir, "package.json"))("playwright-core");

// code-server on a 2-core machine running eight of them: be patient with the first load.
const WORKBENCH_WITHIN = 120_000;
const OUTPUT_WITHIN = 60_000;
const started = Date.now();
const log = (msg) => console.log(`browser: [${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // No user namespaces for chromium's sandbox here. Without WebGL the terminal draws with
  // xterm's DOM renderer, so its text can be read from the page.
  args: ["--no-sandbox", "--disable-3d-apis"],
});
let page;
let step = "start";

// Runs one named step; on failure saves a screenshot named after it and stops.
async function check(name, fn) {
  step = name;
  log(name);
  await fn();
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();

  await page.goto(url, { waitUntil: "domcontentloaded" });
  for (const [name, wrong] of [
    ["a wrong password stays on the login page", "not-the-password"],
    ...(oldPassword ? [["the password from before the rotation stays on the login page", oldPassword]] : []),
  ]) {
    await check(name, async () => {
      await page.fill("input[type=password]", wrong);
      await Promise.all([page.waitForLoadState("domcontentloaded"), page.press("input[type=password]", "Enter")]);
      await page.getByText("Incorrect password").waitFor({ timeout: 15_000 });
      if (!new URL(page.url()).pathname.endsWith("/login")) throw new Error(`left the login page: ${page.url()}`);
      if ((await page.locator(".monaco-workbench").count()) > 0) throw new Error("workbench shown");
    });
  }

  await check("log in and wait for the workbench", async () => {
    await page.fill("input[type=password]", password);
    await page.press("input[type=password]", "Enter");
    await page.waitForSelector(".monaco-workbench", { timeout: WORKBENCH_WITHIN });
    // The explorer shows the folder code-server opened.
    await page.waitForSelector(".explorer-folders-view, .explorer-viewlet", { timeout: WORKBENCH_WITHIN });
  });

  await check("the workspace is ~/workspace, trusted without a prompt", async () => {
    const folder = new URL(page.url()).searchParams.get("folder");
    if (folder !== "/home/coder/workspace") throw new Error(`code-server opened ${folder}, not ~/workspace`);
    // The trust dialog comes up shortly after the workbench when it is enabled.
    await page.waitForTimeout(3_000);
    const prompts = await page.getByText("Do you trust the authors").count();
    if (prompts > 0) throw new Error("Workspace Trust asks whether to trust the authors");
    log(`title: ${await page.title()}`);
  });

  await check("open a terminal (F1, Terminal: Create New Terminal)", async () => {
    await page.keyboard.press("F1");
    const input = page.locator(".quick-input-widget .quick-input-box input");
    await input.waitFor({ state: "visible", timeout: 15_000 });
    await input.fill(">Terminal: Create New Terminal");
    await page.locator(".quick-input-list .monaco-list-row").first().waitFor({ timeout: 15_000 });
    await input.press("Enter");
    await page.locator(".xterm-helper-textarea").first().waitFor({ state: "attached", timeout: 30_000 });
  });

  const rows = page.locator(".xterm-rows").first();
  await check("the terminal shows a shell prompt", async () => {
    await page.waitForFunction((el) => el && /[$#]\s*$/m.test(el.innerText), await rows.elementHandle(), {
      timeout: OUTPUT_WITHIN,
    });
  });

  // Types `command` (one line) into the terminal, then waits until its text matches
  // every regex in `want`.
  async function run(command, want) {
    const head = command.slice(0, 12);
    for (let attempt = 1; ; attempt++) {
      // Click into the terminal near its top left (a notification toast may cover the
      // centre; the welcome page, still loading, may have taken the keyboard focus).
      await page.locator(".xterm-screen").first().click({ position: { x: 20, y: 5 } });
      await page.locator(".xterm-helper-textarea").first().focus();
      // One input event for the line (typing key by key takes ~0.1 s a key here), then Enter.
      await page.keyboard.insertText(command);
      await page.keyboard.press("Enter");
      const echoed = await page
        .waitForFunction((args) => args[0].innerText.includes(args[1]), [await rows.elementHandle(), head], { timeout: 5_000 })
        .then(() => true, () => false);
      if (echoed) break;
      if (attempt === 2) throw new Error(`the terminal never showed the typed command; it shows:\n${await rows.innerText()}`);
      log("the typed command did not reach the terminal; typing it again");
    }
    const deadline = Date.now() + OUTPUT_WITHIN;
    let text = "";
    for (;;) {
      text = await rows.innerText();
      if (want.every((re) => re.test(text))) break;
      if (Date.now() > deadline) {
        const missing = want.filter((re) => !re.test(text)).map(String);
        throw new Error(`terminal lacks ${missing.join(", ")}; it shows:\n${text}`);
      }
      await page.waitForTimeout(500);
    }
    for (const line of text.split("\n").filter((l) => want.some((re) => re.test(l)))) log(`terminal: ${line.trim()}`);
  }

  await check("run bash, git and claude in the terminal", async () => {
    // Whether Claude Code's key helper finds a key, never the key itself.
    const want = [/shell=\S*bash bash=5\./, /git version \d+\.\d+/, /\d+\.\d+\.\d+ \(Claude Code\)/];
    if (process.env.CS_EXPECT_CLAUDE_KEY === "1") want.push(/claude_key=set/);
    await run(
      'echo "shell=$0 bash=$BASH_VERSION claude_key=$(csagent-claude-key >/dev/null 2>&1 && echo set)"; git --version; claude --version',
      want,
    );
  });

  if (!oldPassword) {
    await check("write ~/.gitconfig and ~/workspace/notes.txt", async () => {
      await run(
        `git config --global user.name "${mark}" && echo "${mark}" > ~/workspace/notes.txt && echo "wrote-$(cat ~/workspace/notes.txt)"`,
        [new RegExp(`wrote-${mark}`)],
      );
    });
  } else {
    await check("~/.gitconfig and ~/workspace/notes.txt are still there", async () => {
      await run('echo "name=$(git config --global user.name) notes=$(cat ~/workspace/notes.txt)"', [
        new RegExp(`name=${mark} notes=${mark}`),
      ]);
    });
  }

  const done = join(shots, oldPassword ? "terminal-after-rotation.png" : "terminal.png");
  await page.screenshot({ path: done });
  log(`passed; screenshot ${done}`);
  await browser.close();
} catch (err) {
  const shot = join(shots, `failed-${step.replace(/[^a-z0-9]+/gi, "-")}.png`);
  if (page) await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
  console.error(`browser: FAILED at "${step}" (${page ? page.url() : "no page"}): ${err.message}`);
  console.error(`browser: screenshot ${shot}`);
  await browser.close().catch(() => {});
  process.exit(1);
}
