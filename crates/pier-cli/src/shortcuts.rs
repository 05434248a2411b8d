//! Top-level shortcuts of `pier image` subcommands, as Docker has them: `pier save`,
//! `pier load`, `pier tag`, `pier history`. Each takes the same flags as its
//! `pier image` form and runs it.

use std::path::PathBuf;

use clap::Args;

use crate::images::ImageCommand;
use crate::SaveFormat;

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Archive layout.
    #[arg(long = "type", value_enum, default_value = "docker-archive")]
    pub kind: SaveFormat,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of standard input.
    #[arg(short, long)]
    pub input: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub image: String,
}

impl From<SaveArgs> for ImageCommand {
    fn from(a: SaveArgs) -> Self {
        ImageCommand::Save {
            output: a.output,
            kind: a.kind,
            images: a.images,
        }
    }
}

impl From<LoadArgs> for ImageCommand {
    fn from(a: LoadArgs) -> Self {
        ImageCommand::Load { input: a.input }
    }
}

impl From<TagArgs> for ImageCommand {
    fn from(a: TagArgs) -> Self {
        ImageCommand::Tag {
            source: a.source,
            target: a.target,
        }
    }
}

impl From<HistoryArgs> for ImageCommand {
    fn from(a: HistoryArgs) -> Self {
        ImageCommand::History { image: a.image }
    }
}
