use super::*;
use pier_archive::ignore;

fn cmds(text: &str) -> Vec<Command> {
    parse(text)
        .unwrap()
        .instructions
        .into_iter()
        .map(|i| i.command)
        .collect()
}

fn err(text: &str) -> ParseError {
    parse(text).unwrap_err()
}

#[test]
fn instructions_forms_and_flags() {
    let c = cmds(
        "FROM --platform=linux/amd64 bb AS Build\n\
         RUN echo hi\n\
         RUN [\"echo\", \"json\"]\n\
         RUN [not json\n\
         CMD [\"sh\"]\n\
         entrypoint /bin/app --flag\n\
         COPY --from=build --chown=1:2 --chmod=640 a b /dst/\n\
         ADD [\"with space\", \"/x\"]\n\
         WORKDIR /app\n\
         USER nobody:nogroup\n\
         EXPOSE 80 53/udp\n\
         VOLUME [\"/data\", \"/logs\"]\n\
         VOLUME /a /b\n\
         SHELL [\"/bin/bash\", \"-c\"]\n\
         STOPSIGNAL SIGINT\n\
         MAINTAINER me\n",
    );
    assert_eq!(
        c[0],
        Command::From {
            image: "bb".into(),
            alias: Some("build".into()),
            platform: Some("linux/amd64".into())
        }
    );
    assert_eq!(c[1], Command::Run(CmdLine::Shell("echo hi".into())));
    assert_eq!(
        c[2],
        Command::Run(CmdLine::Exec(vec!["echo".into(), "json".into()]))
    );
    assert_eq!(c[3], Command::Run(CmdLine::Shell("[not json".into())));
    assert_eq!(c[4], Command::Cmd(CmdLine::Exec(vec!["sh".into()])));
    assert_eq!(
        c[5],
        Command::Entrypoint(CmdLine::Shell("/bin/app --flag".into()))
    );
    assert_eq!(
        c[6],
        Command::Copy(CopyArgs {
            sources: vec!["a".into(), "b".into()],
            dest: "/dst/".into(),
            from: Some("build".into()),
            chown: Some("1:2".into()),
            chmod: Some("640".into()),
        })
    );
    assert!(matches!(&c[7], Command::Add(a) if a.sources == ["with space"] && a.dest == "/x"));
    assert_eq!(c[8], Command::Workdir("/app".into()));
    assert_eq!(c[9], Command::User("nobody:nogroup".into()));
    assert_eq!(c[10], Command::Expose(vec!["80".into(), "53/udp".into()]));
    assert_eq!(c[11], Command::Volume(vec!["/data".into(), "/logs".into()]));
    assert_eq!(c[12], Command::Volume(vec!["/a".into(), "/b".into()]));
    assert_eq!(c[13], Command::Shell(vec!["/bin/bash".into(), "-c".into()]));
    assert_eq!(c[14], Command::StopSignal("SIGINT".into()));
    assert_eq!(c[15], Command::Maintainer("me".into()));
}

#[test]
fn env_label_and_arg_forms() {
    let c = cmds(
        "ENV A=1 B=\"two words\" C=three\\ words\n\
         ENV OLD value with spaces\n\
         LABEL \"com.example.k\"=\"v\" other=x\n\
         ARG NAME\n\
         ARG V=1.0\n",
    );
    assert_eq!(
        c[0],
        Command::Env(vec![
            ("A".into(), "1".into()),
            ("B".into(), "\"two words\"".into()),
            ("C".into(), "three\\ words".into()),
        ])
    );
    assert_eq!(
        c[1],
        Command::Env(vec![("OLD".into(), "value with spaces".into())])
    );
    assert_eq!(
        c[2],
        Command::Label(vec![
            ("\"com.example.k\"".into(), "\"v\"".into()),
            ("other".into(), "x".into()),
        ])
    );
    assert_eq!(c[3], Command::Arg(vec![("NAME".into(), None)]));
    assert_eq!(c[4], Command::Arg(vec![("V".into(), Some("1.0".into()))]));
    assert!(err("ENV A=1 B\n").message.contains("can't find ="));
    assert!(err("ENV ONLYNAME\n").message.contains("two arguments"));
}

#[test]
fn continuations_comments_and_directives() {
    let df = parse(concat!(
        "# syntax=docker/dockerfile:1\n",
        "# escape=`\n",
        "\n",
        "# a comment\n",
        "FROM bb\n",
        "RUN echo a `\n",
        "# comment inside\n",
        "\n",
        "    b `\n",
        "  c\n",
        "COPY C:\\src /dst\n",
    ))
    .unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.instructions.len(), 3);
    let run = &df.instructions[1];
    assert_eq!(run.line, 6);
    assert_eq!(
        run.command,
        Command::Run(CmdLine::Shell("echo a     b   c".into()))
    );
    assert_eq!(run.original, "RUN echo a     b   c");
    assert_eq!(
        df.warnings.len(),
        1,
        "the empty continuation line is warned of"
    );
    assert!(matches!(&df.instructions[2].command, Command::Copy(a) if a.sources == ["C:\\src"]));

    // The default escape joins with a backslash; trailing blanks after it are fine.
    let df = parse("FROM bb\nRUN a \\  \n  && b\n").unwrap();
    assert_eq!(
        df.instructions[1].command,
        Command::Run(CmdLine::Shell("a   && b".into()))
    );
    // A directive after a comment or an instruction is only a comment.
    let df = parse("# hello\n# escape=`\nFROM bb\n").unwrap();
    assert_eq!(df.escape, '\\');
    let df = parse("FROM bb\n# escape=`\n").unwrap();
    assert_eq!(df.escape, '\\');
    assert!(err("# escape=x\nFROM bb\n")
        .message
        .contains("invalid escape"));
    assert!(err("# escape=`\n# escape=\\\n")
        .message
        .contains("only one"));
    // CRLF and a byte-order mark.
    let df = parse("\u{feff}FROM bb\r\nRUN x\r\n").unwrap();
    assert_eq!(
        df.instructions[1].command,
        Command::Run(CmdLine::Shell("x".into()))
    );
}

#[test]
fn healthcheck_and_onbuild() {
    let c = cmds(
        "HEALTHCHECK --interval=30s --timeout=1m30s --start-period=500ms --retries=3 CMD wget -q localhost\n\
         HEALTHCHECK CMD [\"/bin/check\", \"-x\"]\n\
         HEALTHCHECK NONE\n\
         ONBUILD RUN echo later\n\
         onbuild copy . /app\n",
    );
    assert_eq!(
        c[0],
        Command::Healthcheck(Some(HealthArgs {
            test: CmdLine::Shell("wget -q localhost".into()),
            interval: Some(Duration::from_secs(30)),
            timeout: Some(Duration::from_secs(90)),
            start_period: Some(Duration::from_millis(500)),
            start_interval: None,
            retries: Some(3),
        }))
    );
    assert!(
        matches!(&c[1], Command::Healthcheck(Some(h)) if h.test == CmdLine::Exec(vec!["/bin/check".into(), "-x".into()]))
    );
    assert_eq!(c[2], Command::Healthcheck(None));
    match &c[3] {
        Command::OnBuild { trigger, parsed } => {
            assert_eq!(trigger, "RUN echo later");
            assert_eq!(
                parsed.command,
                Command::Run(CmdLine::Shell("echo later".into()))
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(&c[4], Command::OnBuild { trigger, .. } if trigger == "copy . /app"));
    assert!(err("ONBUILD ONBUILD RUN x").message.contains("chaining"));
    assert!(err("ONBUILD FROM bb").message.contains("isn't allowed"));
    assert!(err("HEALTHCHECK NONE x").message.contains("no arguments"));
    assert!(err("HEALTHCHECK --interval=soon CMD x")
        .message
        .contains("not a duration"));
    assert!(err("HEALTHCHECK WAT x").message.contains("unknown type"));
    assert_eq!(
        parse_duration("1h2m3.5s"),
        Some(Duration::from_secs_f64(3723.5))
    );
    assert_eq!(parse_duration("10us"), Some(Duration::from_micros(10)));
    assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration(""), None);
}

#[test]
fn bad_instructions_name_their_line() {
    let e = err("FROM bb\n\nFOO bar\n");
    assert_eq!(e.line, 3);
    assert_eq!(
        e.to_string(),
        "Dockerfile parse error line 3: unknown instruction: FOO"
    );
    assert!(err("FROM a b").message.contains("one argument, or three"));
    assert!(err("FROM a AS 1x").message.contains("invalid name"));
    assert!(err("COPY onlyone").message.contains("at least two"));
    assert!(err("RUN").message.contains("RUN requires"));
    assert!(err("SHELL /bin/sh -c").message.contains("JSON form"));
    assert!(err("COPY --nope=1 a b").message.contains("unknown flag"));
    assert!(err("RUN --mount=type=cache,target=/x make")
        .message
        .contains("BuildKit"));
    assert!(err("COPY --link a b").message.contains("BuildKit"));
    assert!(err("VOLUME [\"\"]").message.contains("empty"));
}

/// Arbitrary text (a cheap stand-in for a fuzz target): the parser, the substitution
/// lexer and the pattern compiler answer with errors, never panics.
#[test]
fn arbitrary_input_never_panics() {
    const ALPHABET: &[&str] = &[
        "FROM",
        "RUN",
        "COPY",
        "ENV",
        "ARG",
        "ONBUILD",
        "HEALTHCHECK",
        "CMD",
        "SHELL",
        "LABEL",
        " ",
        "\t",
        "\n",
        "\r\n",
        "\\",
        "`",
        "#",
        "=",
        "\"",
        "'",
        "$",
        "{",
        "}",
        ":-",
        ":+",
        ":?",
        "[",
        "]",
        "--",
        "--from=",
        "--interval=",
        "µs",
        "1",
        "a",
        "é",
        "*",
        "**",
        "?",
        "!",
        "/",
        "..",
        "NONE",
        "AS",
        "escape=`",
        "\u{feff}",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let env = |n: &str| n.len().is_multiple_of(2).then(|| n.to_string());
    for _ in 0..20_000 {
        let len = (next() % 24) as usize;
        let text: String = (0..len)
            .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
            .collect();
        let _ = parse(&text);
        let _ = words::expand(&text, '\\', &env);
        let _ = words::expand_words(&text, '`', &env);
        let _ = words::split_raw(&text, '\\');
        let _ = parse_duration(&text);
        if let Ok(g) = ignore::Glob::new(&text, true) {
            let _ = g.matches(&text);
        }
        if let Ok(r) = ignore::IgnoreRules::parse(&text) {
            let _ = r.is_excluded(&text);
        }
    }
}
