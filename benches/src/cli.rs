//! What the simulator binaries (`adaptive-sim`, `jitter-sim`) share: their two flags, writing
//! the plot, and the frame of an SVG plot.

use std::fmt::Write as _;
use std::process::ExitCode;

/// A simulator's command line: one number flag (`--seed`, `--trials`) and `--out PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// The value of the number flag (its default if not given).
    pub number: u64,
    /// Where the SVG plot is written (its default if not given).
    pub out: String,
}

impl Args {
    /// Parses `args` (without the program name) for `bin`, whose number flag is `flag` (e.g.
    /// `"--seed"`); the defaults apply to what is not given. On a bad flag, prints what is wrong
    /// and the usage to stderr and returns `None`.
    pub fn parse(
        bin: &str,
        flag: &str,
        defaults: Args,
        args: impl IntoIterator<Item = String>,
    ) -> Option<Args> {
        let mut parsed = defaults;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match (arg.as_str(), args.next()) {
                (f, Some(v)) if f == flag => match v.parse() {
                    Ok(n) => parsed.number = n,
                    Err(_) => {
                        eprintln!("{flag} wants a number, got {v:?}");
                        return None;
                    }
                },
                ("--out", Some(v)) => parsed.out = v,
                _ => {
                    let value = flag.trim_start_matches('-').to_uppercase();
                    eprintln!("usage: {bin} [{flag} {value}] [--out plot.svg]");
                    return None;
                }
            }
        }
        Some(parsed)
    }
}

/// Writes `svg` to `path` and says so on stdout (success), or says why not on stderr (failure).
#[must_use]
pub fn write_plot(path: &str, svg: &str) -> ExitCode {
    match std::fs::write(path, svg) {
        Ok(()) => {
            println!("\nplot written to {path}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts an SVG plot of `w` × `h` in `out`: the root element (font size `font_size`), a white
/// background and `title` centred at the top (baseline `title_y`). The caller closes it with
/// `</svg>`.
pub fn svg_start(out: &mut String, (w, h): (f64, f64), font_size: u32, title_y: f64, title: &str) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="{font_size}">"#
    );
    let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{title_y}" text-anchor="middle" font-size="14">{title}</text>"#,
        w / 2.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Option<Args> {
        let defaults = Args {
            number: 1,
            out: "plot.svg".into(),
        };
        Args::parse(
            "sim",
            "--seed",
            defaults,
            args.iter().map(|s| s.to_string()),
        )
    }

    #[test]
    fn flags_override_the_defaults_and_bad_flags_are_refused() {
        assert_eq!(parse(&[]).unwrap().number, 1);
        let a = parse(&["--seed", "7", "--out", "x.svg"]).unwrap();
        assert_eq!((a.number, a.out.as_str()), (7, "x.svg"));
        assert!(parse(&["--seed", "seven"]).is_none());
        assert!(parse(&["--trials", "3"]).is_none());
        assert!(parse(&["--seed"]).is_none());
    }
}
